"""A consumed queue deleted while orders flow loses nothing (issue 18, item 3), on a real broker.

`order_placed` is deleted while its consumer (the inventory) is frozen (SIGSTOP), so the
queue stays missing while the order service goes on publishing into the gap. Those messages
must come back to the publisher (`mandatory`) and be retried. Once the consumer thaws, it
sees its consumer cancelled, declares the queue again and consumes. Every accepted order
must be notified, and `GET /order/<id>` must show its outcome.

The outcome queues are not tried here: one `inventory.reserved` publish reaches both
`inventory_reserved` and `order_status`, so the broker returns nothing while only one of
them is missing, and that notification is lost. Publishing one copy per destination (with
keys of its own) closed it, but changed the routing keys other implementations read
(a notification service that takes its status from the routing key called every order
FAILED), so it was taken back; this stays open (see the closing note of issue 18).

The queue is deleted when the lab is quiescent (every order so far notified and its status
set): RabbitMQ discards what a deleted queue holds, and a message routed to it in the very
instant it is deleted was seen confirmed and gone (2 of 12 deletions in the middle of a
stream here). No client can bring those back; what must not be lost is everything else.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from harness.amqp import channel
from harness.lab import Lab
from harness.waiting import wait_until
from lab_services import topology

pytestmark = [pytest.mark.broker, pytest.mark.slow]

BATCH = 12  # orders per phase: before, during and after the gap
# Every other order fails (too much of item_2), so both notification queues carry traffic.
ITEMS = [[{"item_id": "item_1", "quantity": 1, "price": 2.0}],
         [{"item_id": "item_2", "quantity": 1000, "price": 1.0}]]
# queue -> (its consumer, the service that publishes into it)
CONSUMED = {
    topology.QUEUE_ORDER_PLACED: ("inventory", "order"),
}


@contextmanager
def _frozen(lab: Lab, service: str) -> Iterator[None]:
    """SIGSTOP a service's process group for the block (SIGCONT after, whatever happens)."""
    pid = lab.services[service].proc.pid
    os.killpg(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(pid, signal.SIGCONT)


def _place(lab: Lab, accepted: list[str], first: int, n: int) -> None:
    for i in range(first, first + n):
        r = lab.place_order(f"u-{i}", ITEMS[i % 2])
        assert r.status_code in (201, 202, 503), r.text
        if r.status_code != 503:  # a 503 is no promise
            accepted.append(r.json()["order_id"])


def _settled(lab: Lab, accepted: list[str]) -> dict[str, str] | None:
    """Each accepted order's notified status, once every one is notified and its GET agrees."""
    notes = {n["order_id"]: n["status"] for n in lab.get("notification", "/notifications")}
    if not set(accepted) <= set(notes):
        return None
    statuses = {o["order_id"]: o["status"] for o in lab.get("order", "/orders")}
    return notes if all(statuses.get(o) == notes[o] for o in accepted) else None


def _returns(log_path) -> int:
    return log_path.read_text(errors="replace").count("unroutable")


@pytest.mark.parametrize("queue", list(CONSUMED))
def test_a_deleted_queue_loses_no_notification(make_lab, queue):
    lab = make_lab()
    consumer, publisher = CONSUMED[queue]
    accepted: list[str] = []
    _place(lab, accepted, 0, BATCH)
    wait_until(lambda: _settled(lab, accepted), 60, "the first orders settled")
    publisher_log = lab.services[publisher].log_path
    returned_before = _returns(publisher_log)

    if publisher == "inventory":
        # A backlog for the inventory to answer while the queue is missing.
        with _frozen(lab, "inventory"):
            _place(lab, accepted, BATCH, BATCH)
            with _frozen(lab, consumer):
                with channel(lab.amqp_url, confirm=False) as ch:
                    ch.queue_delete(queue)
                os.killpg(lab.services["inventory"].proc.pid, signal.SIGCONT)
                wait_until(lambda: _returns(publisher_log) > returned_before, 60,
                           f"the inventory's outcomes returned while {queue} is missing",
                           detail=lambda: lab.services["inventory"].log_tail())
    else:  # order_placed: the order service publishes into the gap as orders come in
        with _frozen(lab, consumer):
            with channel(lab.amqp_url, confirm=False) as ch:
                ch.queue_delete(queue)
            streamer = threading.Thread(target=_place, args=(lab, accepted, BATCH, BATCH))
            streamer.start()
            wait_until(lambda: _returns(publisher_log) > returned_before, 60,
                       f"orders returned to the order service while {queue} is missing",
                       detail=lambda: lab.services["order"].log_tail())
        streamer.join(timeout=120)
        assert not streamer.is_alive()

    _place(lab, accepted, 2 * BATCH, BATCH)
    notes = wait_until(lambda: _settled(lab, accepted), 90,
                       f"all {len(accepted)} accepted orders notified, with the right status, "
                       f"after {queue} was deleted",
                       detail=lambda: lab.services[consumer].log_tail())
    assert set(notes[o] for o in accepted) == {"RESERVED", "FAILED"}  # both queues used
    with channel(lab.amqp_url, confirm=False) as ch:
        ch.queue_declare(queue, passive=True)  # declared again by its consumer
        assert ch.queue_declare(topology.DLQ, passive=True).method.message_count == 0
