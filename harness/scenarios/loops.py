"""Black-box evidence of two defects the DLQ and the ledger cannot show: a poison loop (a
message redelivered for ever, never dead-lettered) and an order decided twice (two outcome
events with different event ids for one order, seen on the wire).

    redeliveries(run) -> {queue: (redelivered, messages left)}     from the management API
    redelivery_window(run) -> the same, redeliveries counted over a window with no fault
    poison_loops(window) -> ["order_placed: 2311 redeliveries in 3 s with no fault ..."]
    loop_check(scenario, tried, run) -> Check                       key "poison_loop"
    OutcomeTap(run): a queue of the harness's own bound to inventory_events (every key);
        .decided_twice() -> order ids with outcome events of more than one event_id
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import defaultdict
from typing import Any
from urllib.parse import quote

import pika.exceptions

from harness import amqp
from harness.invariants import Check, Invariant, register_invariant
from harness.waiting import WaitTimeout, wait_until
from lab_services import topology as topo

log = logging.getLogger(__name__)

POISON_LOOP = register_invariant(Invariant(
    "poison_loop", "no poison loop",
    "a message that cannot be handled is dead-lettered after a bounded number of attempts",
    "{n} consumed queues cycle a message for ever ({ids}): a consumer that nacks or rejects "
    "with requeue=True (or crashes on it) gets it back at once, again and again; count the "
    "attempts and dead-letter it with its reason", "no message was redelivered for ever"))
OUTCOME_TWICE = register_invariant(Invariant(
    "outcome_twice", "one outcome per order",
    "each order is decided once: a repeated OrderPlaced gets the stored outcome back",
    "{n} orders were decided twice ({ids}): two outcome events with different event ids "
    "went out for each", "no order was decided twice"))

# A window with no fault in it: an honest consumer redelivers nothing then (retries go
# through retry queues or the DLQ, a redelivery needs a crash or a lost connection), while a
# requeue loop turns a message over hundreds of times a second.
LOOP_WINDOW_S = 3.0
# How long the management API's queue statistics may lag behind the queue.
STATS_LAG_S = 2.0
LOOP_PER_MESSAGE = 10  # redeliveries per waiting message within the window
LOOP_MIN = 30


def redeliveries(run: Any) -> dict[str, tuple[int, int]]:
    """Queue -> (messages redelivered so far, messages still in it) for every consumed queue
    (empty when the broker has no management API)."""
    broker = run.broker
    if not getattr(broker, "management_url", None):
        return {}
    from harness.brokers.management import _api
    vhost = quote(run.lab.vhost or "/", safe="")
    try:
        rows = _api(broker, "GET", f"/queues/{vhost}", params={
            "columns": "name,messages,message_stats.redeliver"}).json()
    except Exception as exc:  # no statistics: nothing judged, never a guess
        log.debug("queue statistics: %s", exc)
        return {}
    return {q["name"]: (int((q.get("message_stats") or {}).get("redeliver") or 0),
                        int(q.get("messages") or 0))
            for q in rows if q["name"] in topo.QUEUE_OWNERS}


def redelivery_window(run: Any, seconds: float = LOOP_WINDOW_S) -> dict[str, tuple[int, int]]:
    """Queue -> (redeliveries within a window of `seconds` with no fault, messages left at
    its end); a window is only spent when some consumed queue still holds messages."""
    first = redeliveries(run)
    if not any(left for _n, left in first.values()):
        # The management API's queue statistics lag (about a second here): a queue that a
        # fast scenario has just filled can still read empty. Look once more, past the lag.
        run.hold(STATS_LAG_S)
        first = redeliveries(run)
    if not any(left for _n, left in first.values()):
        return {q: (0, left) for q, (_n, left) in first.items()}
    run.hold(seconds)
    second = redeliveries(run)
    return {q: (max(0, n - first.get(q, (n, 0))[0]), left) for q, (n, left) in second.items()}


def poison_loops(window: dict[str, tuple[int, int]],
                 seconds: float = LOOP_WINDOW_S) -> list[str]:
    """Queues that redelivered far more, within a window with no fault, than they hold: by
    counting, one of the waiting messages went round at least redeliveries/left times."""
    out = []
    for queue, (redelivered, left) in sorted(window.items()):
        if left and redelivered >= max(LOOP_MIN, LOOP_PER_MESSAGE * left):
            out.append(f"{queue}: {redelivered} redeliveries in {seconds:.0f} s with no fault "
                       f"while {left} message(s) never left: a message redelivered at least "
                       f"{redelivered // left} times, never dead-lettered")
    return out


def loop_check(scenario: str, tried: str, run: Any) -> Check:
    """The poison-loop row of a card, judged from the broker's redelivery counts over a
    window with no fault in it."""
    window = redelivery_window(run)
    inv = POISON_LOOP
    if not window:
        return Check(scenario, inv.name, tried, inv.expected,
                     "not judged: the broker gives no redelivery statistics", None,
                     {"skipped": True}, key=inv.key)
    loops = poison_loops(window)
    happened = inv.held_words({}) if not loops else (
        f"poison loop: {'; '.join(loops)}. Evidence: the broker's redelivery count of the "
        "queue. Likely cause: " + REQUEUE_ADVICE)
    return Check(scenario, inv.name, tried, inv.expected, happened, not loops,
                 {"redeliveries_in_window": {q: r for q, (r, _left) in window.items()},
                  "loops": loops}, key=inv.key,
                 cause="requeue_forever" if loops else None)


REQUEUE_ADVICE = ("a consumer requeues what it cannot handle (basic_nack/basic_reject with "
                  "requeue=True, or an exception before the ack): the broker hands it back at "
                  "once, for ever; dead-letter it with its reason after a bounded number of "
                  "attempts")


class OutcomeTap:
    """A queue of the harness's own bound to inventory_events with every key: each outcome
    event the inventory publishes, whatever queue it is meant for, is seen once here."""

    def __init__(self, run: Any, wait_s: float = 10.0) -> None:
        self.run = run
        self.events: list[dict[str, Any]] = []
        self.name: str | None = f"harness.outcomes.{uuid.uuid4().hex[:8]}"
        try:
            # A consumer thread may declare the exchange a moment after /health says ok.
            wait_until(self._bind, wait_s, f"a tap on {topo.INVENTORY_EVENTS}", interval=0.5)
        except WaitTimeout:  # no such exchange: this check is not judged, the others are
            run.gap(f"exchange '{topo.INVENTORY_EVENTS}'", "does not exist")
            self.name = None

    def _bind(self) -> bool:
        try:
            with amqp.channel(self.run.lab.amqp_url, confirm=False) as ch:
                # Expires by itself if the run dies before close(): nothing left behind.
                ch.queue_declare(self.name, durable=False, arguments={"x-expires": 600_000})
                ch.queue_bind(self.name, topo.INVENTORY_EVENTS, "#")
            return True
        except pika.exceptions.ChannelClosedByBroker as exc:
            log.debug("tap on %s: %s", topo.INVENTORY_EVENTS, exc)
            return False

    def close(self) -> list[dict[str, Any]]:
        """Read what the tap caught, delete it, and return the outcome events (JSON bodies)."""
        if self.name is None:
            return self.events
        try:
            rows = amqp.read_queue(self.run.lab.amqp_url, self.name, remove=True)
            with amqp.channel(self.run.lab.amqp_url, confirm=False) as ch:
                ch.queue_delete(self.name)
        except pika.exceptions.AMQPError as exc:  # the tap is gone: judge nothing from it
            log.warning("tap on %s could not be read: %s", topo.INVENTORY_EVENTS, exc)
            self.name = None
            return self.events
        for r in rows:
            try:
                body = json.loads(r["body"])
            except (ValueError, TypeError):
                continue
            if isinstance(body, dict) and isinstance(body.get("order_id"), str):
                self.events.append(body)
        return self.events

    def decided_twice(self, among: set[str] | None = None) -> list[str]:
        """Orders with outcome events of more than one event_id (copies of ONE outcome, sent
        again after a crash or once per queue by an implementation that does, share their
        event_id)."""
        ids: dict[str, set[str]] = defaultdict(set)
        for e in self.events:
            if among is None or e["order_id"] in among:
                ids[e["order_id"]].add(str(e.get("event_id")))
        return sorted(o for o, evs in ids.items() if len(evs) > 1)


def twice_check(scenario: str, tried: str, tap: OutcomeTap, among: set[str],
                restarted: bool) -> Check:
    """The one-outcome-per-order row: orders decided twice, seen on the wire."""
    inv = OUTCOME_TWICE
    if tap.name is None:
        return Check(scenario, inv.name, tried, inv.expected,
                     f"not judged: there is no {topo.INVENTORY_EVENTS} exchange to watch", None,
                     {"not_judged": True}, key=inv.key)
    twice = tap.decided_twice(among)
    if not twice:
        happened = inv.held_words({})
        cause = None
    elif restarted:
        happened = (f"{len(twice)} orders were decided twice after the inventory restarted "
                    f"({', '.join(twice[:5])}). Evidence: two outcome events with different "
                    "event ids for each, on inventory_events, the second after the restart. "
                    "Likely cause: your processed-order record did not survive the restart: "
                    "keep it durable, in the same transaction as the reservation")
        cause = "record_lost_in_restart"
    else:  # the copies' own rows name the cause (event_id keys, no check at all)
        happened = inv.broken_words(twice)
        cause = None
    return Check(scenario, inv.name, tried, inv.expected, happened, not twice,
                 {"order_ids": twice[:20], "outcome_events": len(tap.events)},
                 key=inv.key, cause=cause)
