"""Outcomes held through a broker restart: a step of the reconnect scenario (black-box).

With the notification service stopped, a few orders are placed and their outcomes wait in
`inventory_reserved` / `inventory_failed`; the broker is killed (kill -9) and started again,
then the notification service. A persistent outcome in a durable queue survives the restart and is
notified; a transient one (delivery_mode 1 or unset) is dropped by the broker, and its order
is lost. The waiting messages are looked at (never taken) before the restart, and the queues
counted after it, so that a lost order's cause names what the broker held.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pika.exceptions

from harness import amqp
from harness.invariants import dlq_order_id
from harness.load import LoadSpec
from harness.runner import THROUGHPUT_FLOOR, Run
from harness.scenarios.common import accepted_ids
from harness.waiting import WaitTimeout, wait_until
from lab_services import topology as topo

log = logging.getLogger(__name__)

OUTCOME_QUEUES = (topo.QUEUE_INVENTORY_RESERVED, topo.QUEUE_INVENTORY_FAILED)
NOTIFIER = "notification"


@dataclass
class HeldOutcomes:
    """What the step did and saw: its accepted orders, the outcomes that waited (order id,
    queue, delivery_mode), the queues' depths before and after the restart (None: the
    queue was gone), or why it was skipped."""

    accepted: list[str] = field(default_factory=list)
    waited: list[dict[str, Any]] = field(default_factory=list)
    before: dict[str, int] = field(default_factory=dict)
    after: dict[str, int | None] = field(default_factory=dict)
    skipped: str | None = None
    notified_before: list[dict[str, Any]] | None = None  # GET /notifications before the stop
    forgotten: list[str] = field(default_factory=list)

    def notifications(self, now: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The notifications to judge: `now`, unless the restarted notification service
        forgot some it had shown before the stop (a notification list kept in memory, which
        chaos judges); then those it showed before, and what came after. A broker restart
        is judged here, not the notification service's own restart."""
        if not self.notified_before:
            return now
        left = Counter(n["order_id"] for n in now)
        left.subtract(n["order_id"] for n in self.notified_before)
        self.forgotten = sorted(o for o, k in left.items() if k < 0)
        if not self.forgotten:
            return now
        before = {n["order_id"] for n in self.notified_before}
        return self.notified_before + [n for n in now if n["order_id"] not in before]

    def facts(self) -> dict[str, Any]:
        """What the causes read (harness.grading.causes: a lost order's outcome that waited)."""
        return {"held_outcomes": {"waited": self.waited, "before": self.before,
                                  "after": self.after}}

    def tried(self) -> str:
        """The step, in words for the card."""
        if self.skipped:
            return f"(the outcome-restart step was skipped: {self.skipped})"
        forgot = (f" (it forgot {len(self.forgotten)} earlier notifications in its restart: "
                  "those were judged from what it showed before)" if self.forgotten else "")
        return (f"then stopped the notification service, placed {len(self.accepted)} orders "
                f"whose outcomes waited in their queues ({self.before}), restarted the broker "
                f"and started the notification service again{forgot}")


def hold_outcomes_through_restart(run: Run, orders: int, seed: int = 37) -> HeldOutcomes:
    """Stop the notification service, place `orders` orders, let their outcomes wait in
    their queues, restart the broker (kill -9, start), start the notification
    service again. The caller waits for the orders' notifications and judges them."""
    held = HeldOutcomes()
    if not amqp.consumers(run.lab.amqp_url, topo.QUEUE_ORDER_PLACED):
        held.skipped = f"nothing consumes {topo.QUEUE_ORDER_PLACED} any more"
        return held
    try:
        held.notified_before = run.lab.notifications()
    except Exception as exc:  # a gap of its own, noted when the state is read
        log.debug("notifications before the outcome restart: %s", exc)
    run.faults.stop_service(NOTIFIER)
    try:
        load = run.place(LoadSpec(orders=orders, concurrency=2, seed=seed, progress=False,
                                  description="orders while the notification service is "
                                              "stopped"))
        held.accepted = accepted_ids(load)
        held.before = _waiting(run, len(held.accepted))
        if not sum(held.before.values()):
            held.skipped = f"no outcome waited in {', '.join(OUTCOME_QUEUES)}"
            return held
        held.waited = _look(run)
        # kill -9, not a graceful stop: what a confirm promised is on disk either way, a
        # transient message is dropped either way, and a kill saves the stop's 6 s.
        run.faults.kill_broker()
        run.faults.start_broker()
        # Counted before the notification service is back to consume them.
        held.after = {q: _depth(run, q) for q in OUTCOME_QUEUES}
        for name, svc in run.lab.services.items():
            if name != NOTIFIER and svc.running:
                try:
                    svc.wait_healthy(60)
                except RuntimeError as exc:  # judged by the lost orders and the health
                    log.warning("%s not healthy after the outcome restart: %s", name, exc)
    finally:
        try:
            run.faults.start_service(NOTIFIER)
        except RuntimeError as exc:  # ServiceFailed: its death is on the card already
            log.warning("the notification service did not come back: %s", exc)
    return held


def _depth(run: Run, queue: str) -> int | None:
    """Messages ready in a queue, or None when it does not exist (any more)."""
    try:
        return amqp.depth(run.lab.amqp_url, queue)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code != 404:
            raise
        return None


def _waiting(run: Run, n: int) -> dict[str, int]:
    """Wait (bounded) until the outcome queues hold n messages; their depths then (a queue
    the implementation does not have counts 0)."""
    def depths() -> dict[str, int]:
        return {q: _depth(run, q) or 0 for q in OUTCOME_QUEUES}

    def enough() -> dict[str, int] | None:
        d = depths()
        return d if sum(d.values()) >= n else None

    try:
        return wait_until(enough, 10 + n / THROUGHPUT_FLOOR,
                          f"{n} outcomes waiting in their queues")
    except WaitTimeout as exc:
        log.warning("%s", exc)
        return depths()


def _look(run: Run) -> list[dict[str, Any]]:
    """The waiting outcomes (order id, queue, delivery_mode), read and put back."""
    seen = []
    for queue in OUTCOME_QUEUES:
        try:
            rows = amqp.read_queue(run.lab.amqp_url, queue)
        except pika.exceptions.ChannelClosedByBroker:
            continue
        for m in rows:
            oid = dlq_order_id(m)  # any read message's JSON body, not only the DLQ's
            if oid is not None:
                seen.append({"order_id": oid, "queue": queue,
                             "delivery_mode": m.get("delivery_mode")})
    return seen

