"""The delivery limit is charged to the message that killed the consumer, not to its burst.

Issue 18, item 1: one order that crashes the inventory, with 100 valid orders delivered in
the same socket read (the same burst, inside the prefetch window), crashed it five times;
the sixth delivery dead-lettered all 101. Whether valid orders share the poison's burst is
timing in real life, so this test makes it happen every time:

- the inventory holding the messages is frozen (SIGSTOP) until the broker has written all
  101 deliveries into its socket, so its next read takes them in one burst;
- a second inventory process is started and frozen before the holder is thawed and
  crashes, so the broker hands all 101 back to it, again unread, and so on for each crash.

Each crash is therefore a process that read the poison and the 100 valid orders at once.
Every return counts once at the broker, so a quorum queue's own limit (x-delivery-limit,
counted on every return before RabbitMQ 4.3) sees exactly five returns.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest
import requests

from harness import amqp
from harness.brokers.procs import freeze_group
from harness.lab import ServiceProcess
from harness.waiting import wait_until
from lab_services import events
from lab_services import topology as topo
from lab_services.crashpoints import CRASH_EXIT_CODE

pytestmark = pytest.mark.broker

POISON = "ORD-20260101-0poison1"
VALID = [f"ORD-20260101-{i:08d}" for i in range(100)]
FRIES = [{"item_id": "item_4", "quantity": 1, "price": 4.5}]
CRASHES = 5  # DELIVERY_LIMIT=5: the sixth delivery dead-letters the poison


def _publish_orders(amqp_url: str) -> int:
    """Publish the poison, then the valid orders (confirmed); return the bodies' bytes."""
    publisher = amqp.Publisher(amqp_url)
    total = 0
    try:
        for order_id in (POISON, *VALID):
            event = events.order_placed(order_id, "u1", events.validate_items(FRIES))
            body, props = amqp.order_copy(json.loads(event.to_json()))
            publisher.publish(body, props)
            total += len(body)
    finally:
        publisher.close()
    return total


def _queue(amqp_url: str) -> tuple[int, int]:
    """(messages ready, consumers) of order_placed, exact and current."""
    with amqp.channel(amqp_url, confirm=False) as ch:
        method = ch.queue_declare(topo.QUEUE_ORDER_PLACED, passive=True).method
        return method.message_count, method.consumer_count


def _unread_bytes(pid: int) -> int:
    """Bytes waiting unread in a process's TCP sockets (psutil does not report this)."""
    out = subprocess.run(["ss", "-tnpH", "state", "established"], capture_output=True,
                         text=True, check=True).stdout
    return sum(int(line.split()[0]) for line in out.splitlines() if f"pid={pid}," in line)


def _signal(proc: ServiceProcess, sig: signal.Signals) -> None:
    if sig == signal.SIGSTOP:  # every thread stopped, not only signalled
        freeze_group(proc.proc.pid)
    else:
        os.killpg(proc.proc.pid, sig)  # the services start in a session of their own


def _wait_all_delivered_unread(amqp_url: str, holder: ServiceProcess, body_bytes: int) -> None:
    """Block until the frozen holder has every message in its socket, unread."""
    seen = [-1]

    def buffered() -> bool:
        ready, _ = _queue(amqp_url)
        unread = _unread_bytes(holder.proc.pid)
        # Nothing left in the queue, at least the bodies' bytes waiting, and no more arriving.
        done = ready == 0 and unread >= body_bytes and unread == seen[-1]
        seen.append(unread)
        return done

    wait_until(buffered, 60, "all orders delivered to the frozen inventory", interval=0.1,
               max_interval=0.2, detail=lambda: f"unread bytes {seen[-5:]}, want {body_bytes}+")


def _dead_letters(amqp_url: str) -> list[dict]:
    return amqp.read_queue(amqp_url)


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_a_poison_order_is_dead_lettered_and_its_100_burst_neighbours_are_notified(
        make_lab, queue_type):
    lab = make_lab(queue_type=queue_type, replicas={"inventory": 2},
                   extra_env={"DELIVERY_LIMIT": str(CRASHES),
                              "LAB_CRASH_AT": f"before_commit:{POISON}"})
    first, second = lab.processes["inventory"]
    lab.stop("inventory", replica=1)
    holder = first
    _signal(holder, signal.SIGSTOP)
    try:
        body_bytes = _publish_orders(lab.amqp_url)
        for _crash in range(CRASHES):
            _wait_all_delivered_unread(lab.amqp_url, holder, body_bytes)
            taker = second if holder is first else first
            taker.start()
            taker.wait_healthy(60)
            # Its consumer is registered (beside the frozen holder's) before it is frozen.
            wait_until(lambda: _queue(lab.amqp_url)[1] == 2, 30, "a second consumer")
            _signal(taker, signal.SIGSTOP)
            _signal(holder, signal.SIGCONT)
            assert holder.wait_exit(60) == CRASH_EXIT_CODE, holder.log_tail()
            holder = taker
        _wait_all_delivered_unread(lab.amqp_url, holder, body_bytes)
        _signal(holder, signal.SIGCONT)
        lab.wait_notified(VALID, 120)
    finally:
        for proc in (first, second):
            if proc.running:
                _signal(proc, signal.SIGCONT)
    dead = wait_until(lambda: _dead_letters(lab.amqp_url) or None, 30, "the poison in the DLQ")
    assert [json.loads(d["body"])["order_id"] for d in dead] == [POISON]
    assert "delivery limit exceeded (6 deliveries" in dead[0]["reason"]
    notified = {n["order_id"] for n in lab.notifications()}
    assert notified == set(VALID)
    outcomes = requests.get(holder.url + "/reservations", timeout=10).json()["outcomes"]
    assert {o["order_id"] for o in outcomes} == set(VALID)
    assert all(o["times_processed"] == 1 for o in outcomes)
