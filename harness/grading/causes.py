"""Causes read from evidence: why an order was lost or doubled, from what the run recorded.

A broken invariant's ids are explained by the facts a verdict carries (`Verdict.facts`):
the DLQ copies and their reasons, the ledger's rows and outcomes, the notifications, the
faults on the timeline (kills and restarts) and the services' health. A cause is only
named when its evidence was seen; otherwise `explain` returns None and the card keeps the
invariant's own words. `root_causes` groups a card's checks so that one cause is listed
once, with every check it broke.

    explain(invariant_key, ids, facts) -> Cause | None
    root_causes(checks) -> list[(Cause key, advice, [Check, ...])]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from harness.invariants import Check, dlq_order_id
from lab_services.topology import owner_of

# Reasons a store gives when an insert repeats a primary or unique key.
_KEY_CLASH = re.compile(r"IntegrityError|UNIQUE constraint|duplicate key|UniqueViolation",
                        re.I)
# Fault kinds on the timeline that can lose what a process held in memory.
_KILLS = ("kill", "restart", "stop", "crash")

ADVICE = {
    "pk_duplicate": "your duplicate check relies on the primary key: a repeated order raises "
                    "and is dead-lettered; look the order up (by order_id) before reserving and "
                    "answer a duplicate with the outcome already decided",
    "dead_lettered": "a valid order was dead-lettered by its handler: only a message that can "
                     "never be handled belongs in the DLQ",
    "ack_before_work": "these orders left no trace where one was looked for, and a kill or "
                       "restart came first: did you ack before the work was done, publish "
                       "without confirms, or publish transient messages?",
    "outcome_not_delivered": "the inventory decided these orders but their outcome never "
                             "reached the notification: did you ack before the work was done? "
                             "The work ends when the broker confirms the outcome: publish it "
                             "persistent, with confirms, and ack the input only then",
    "consumer_stalled": "messages were still waiting (or held unacked) for a consumer whose "
                        "/health said ok: its consuming thread died or stopped, or a reconnect "
                        "left the old connection open with its unacked deliveries; close the "
                        "old connection before reconnecting, make /health fail when the "
                        "consumer is gone, and never let one message end the consumer",
    "consumer_gone": "the consuming thread ended with the lost connection and nothing started "
                     "it again (or /health does not look at it): reconnect and consume again "
                     "after a connection error, and make /health fail while nothing consumes",
    "consumer_dead": "a consumer was not running (or not healthy) at the end: a service must "
                     "survive bad input and broker loss, and keep consuming",
    "never_processed": "these orders never reached the inventory's ledger and were never "
                       "dead-lettered, with no fault to blame: check that the order service "
                       "publishes each one (with confirms) and that the inventory consumes "
                       "order_placed",
    "record_lost_in_restart": "orders were reserved again after a kill or restart: the record "
                              "of processed orders must be durable and written in the same "
                              "transaction as the reservation",
    "no_duplicate_check": "orders were reserved again with no restart in between: check "
                          "whether the order was processed (by order_id) before reserving",
    "keyed_on_event_id": "exact copies were recognised but copies with a new event_id were "
                         "not: recognise an order by its order_id, not by the event_id",
    "notifier_not_idempotent": "the notification service must ignore an outcome it has "
                               "already notified (RabbitMQ redelivers)",
    "no_stock_check": "the inventory reserved more than it had: check the stock of every line "
                      "before reserving, in the same transaction",
    "wrong_failure": "an order's outcome is not the one its stock called for: fail an order "
                     "only when one of its own lines is short, and then keep none of it",
    "partial_reservation": "a FAILED order kept the stock of some lines: reserve all lines or "
                           "none (one transaction, rolled back when a line is short)",
    "outcome_without_ledger": "an order is RESERVED (or notified so) with no line in the "
                              "ledger: a duplicate must not get a fresh outcome, and the ledger "
                              "must hold what was reserved",
    "requeue_forever": "a consumer requeues what it cannot handle (basic_nack/basic_reject "
                       "with requeue=True, or an exception before the ack): the broker hands "
                       "it back at once, for ever; dead-letter it with its reason after a "
                       "bounded number of attempts",
    "ledger_not_durable": "reservations seen before a kill were gone after it: the ledger "
                          "must be written to durable storage before the input is acked",
    "outcome_refused": "the broker refused these orders' outcomes (a nack with confirms, a "
                       "silent drop without them) and the inventory acked the orders anyway: "
                       "publish with confirms, wait for each one, and on a nack or a return "
                       "publish again (or requeue the input); ack the input only once its "
                       "outcome is confirmed",
    "failed_never_published": "an order the stock cannot cover is decided FAILED but its "
                              "InventoryFailed never goes out: publish an outcome for every "
                              "order, FAILED ones too (with their reason), before acking it",
    "transient_outcomes": "outcomes published as transient messages (delivery_mode 1 or "
                          "unset) are dropped by a broker restart while they wait for their "
                          "consumer: publish every event persistent (delivery_mode 2) into "
                          "durable queues",
    "lost_in_broker_restart": "outcomes waiting in their queue did not survive a broker "
                              "restart: declare the queues durable and publish persistent "
                              "(delivery_mode 2)",
    "fresh_outcome": "a duplicate was answered with a fresh outcome, not the one already "
                     "decided: when an order was processed before, publish its stored outcome "
                     "again and change nothing",
    "reserved_on_duplicate": "a FAILED order was reserved when its OrderPlaced came again: "
                             "look the order up (by order_id) before deciding, and answer a "
                             "duplicate with the outcome already decided",
}


@dataclass(frozen=True)
class Cause:
    """A root cause: its key (in ADVICE), the advice, and the evidence that named it."""

    key: str
    text: str
    evidence: str


def _cause(key: str, evidence: str) -> Cause:
    return Cause(key, ADVICE[key], evidence)


def _kills(facts: dict[str, Any]) -> list[str]:
    """The kills and restarts of services or the broker the run recorded, as 'kind target'."""
    rows = facts.get("timeline") or []
    return [f"{r.get('kind')} {r.get('target')}" for r in rows
            if str(r.get("kind", "")).split()[0] in _KILLS]


def _dead_consumers(facts: dict[str, Any]) -> list[str]:
    health = facts.get("health") or {}
    died = facts.get("died") or {}
    return sorted(set(died) | {s for s, h in health.items() if h is None})


def _dlq_reasons(facts: dict[str, Any], ids: list[str]) -> dict[str, str]:
    """Order id -> the reason of its DLQ copy (with its delivery attempts), for the orders."""
    wanted = set(ids)
    out = {}
    for m in facts.get("dlq") or []:
        oid = dlq_order_id(m)
        if oid in wanted:
            attempts = m.get("attempts")
            tried = f" after {attempts} attempts" if isinstance(attempts, int) and attempts else ""
            out.setdefault(oid, str(m.get("reason") or "no reason")[:160] + tried)
    return out


def _in_ledger(facts: dict[str, Any]) -> set[str]:
    ledger = facts.get("ledger") or {}
    return ({r["order_id"] for r in ledger.get("reservations", [])}
            | {r["order_id"] for r in ledger.get("outcomes", [])})


def _reserved_in_ledger(facts: dict[str, Any]) -> set[str]:
    ledger = facts.get("ledger") or {}
    return ({r["order_id"] for r in ledger.get("reservations", [])}
            | {r["order_id"] for r in ledger.get("outcomes", []) if r.get("reserved") is True})


def _lost_in_restart(ids: list[str], facts: dict[str, Any]) -> Cause | None:
    """Lost orders whose outcome the harness saw waiting in its queue before a broker restart
    (harness.scenarios.held_outcomes), when the queues held fewer messages after it."""
    held = facts.get("held_outcomes") or {}
    wanted = set(ids)
    waited = [m for m in held.get("waited") or [] if m.get("order_id") in wanted]
    before, after = held.get("before") or {}, held.get("after") or {}
    n_before, n_after = sum(before.values()), sum(v or 0 for v in after.values())
    if not waited or n_after >= n_before:
        return None
    gone = [q for q, v in after.items() if v is None]
    counts = (f"the outcome queues held {n_before} messages before the broker restart and "
              f"{n_after} after it" + (f" ({', '.join(gone)} gone)" if gone else ""))
    transient = [m for m in waited if m.get("delivery_mode") != 2]
    if transient:
        m = transient[0]
        return _cause("transient_outcomes", f"{len(transient)} of them had their outcome "
                                            f"waiting in {m['queue']} as a transient message "
                                            f"(delivery_mode {m.get('delivery_mode') or 'unset'}"
                                            f", e.g. {m['order_id']}) when the broker "
                                            f"restarted: {counts}")
    return _cause("lost_in_broker_restart", f"{len(waited)} of them had their outcome waiting "
                                            f"(persistent) in {waited[0]['queue']} when the "
                                            f"broker restarted: {counts}")


def _refused(ids: list[str], facts: dict[str, Any]) -> Cause | None:
    """Lost orders placed while the broker refused the outcomes' queue, and reserved."""
    refused = facts.get("publishes_refused") or {}
    hit = sorted(set(ids) & set(refused.get("orders") or []) & _reserved_in_ledger(facts))
    if not hit:
        return None
    return _cause("outcome_refused", f"{len(hit)} of them were placed while the broker "
                                     f"refused every publish to {refused.get('queue')} (a "
                                     f"reject-publish policy) and are reserved in the ledger "
                                     f"(e.g. {hit[0]}), yet were never notified after the "
                                     "refusal was lifted")


def _failed_unpublished(ids: list[str], facts: dict[str, Any]) -> Cause | None:
    """Every lost order the ledger decided is FAILED there, and no FAILED order was ever
    notified while RESERVED ones were: the InventoryFailed never went out."""
    ledger = facts.get("ledger") or {}
    outcome = {o["order_id"]: o for o in ledger.get("outcomes", [])}
    failed = sorted(o for o in ids if outcome.get(o, {}).get("reserved") is False)
    if not failed or set(ids) & _reserved_in_ledger(facts):
        return None
    notes = facts.get("notifications") or []
    reserved = sum(1 for n in notes if n.get("status") == "RESERVED")
    if not reserved or any(n.get("status") == "FAILED" for n in notes):
        return None
    reason = outcome[failed[0]].get("reason")
    expected = facts.get("expected") or {}
    short = ("; the stock could not cover them" if all(expected.get(o) is False for o in failed)
             and expected else "")
    return _cause("failed_never_published",
                  f"{len(failed)} of them are FAILED in the ledger (e.g. {failed[0]}"
                  f"{': ' + str(reason)[:80] if reason else ''}){short}; no FAILED order was "
                  f"ever notified, while {reserved} RESERVED orders were")


def _explain_lost(ids: list[str], facts: dict[str, Any]) -> Cause | None:
    reasons = _dlq_reasons(facts, ids)
    if reasons:
        clash = {o: r for o, r in reasons.items() if _KEY_CLASH.search(r)}
        if clash:
            oid, reason = next(iter(clash.items()))
            return _cause("pk_duplicate", f"{len(clash)} of them in the DLQ with a key clash "
                                          f"({oid}: {reason})")
        oid, reason = next(iter(reasons.items()))
        return _cause("dead_lettered", f"{len(reasons)} of them in the DLQ ({oid}: "
                                       f"{reason})")
    dead = _dead_consumers(facts)
    if dead:
        return _cause("consumer_dead", f"not running or not healthy at the end: {dead}")
    health = facts.get("health") or {}
    stalled = {q: n for q, n in (facts.get("queues_left") or {}).items()
               if n and health.get(owner_of(q) or "") is not None and owner_of(q) in health}
    if stalled:
        return _cause("consumer_stalled", f"still waiting at the end: {stalled}, while the "
                                          "consumer's /health said ok")
    for finder in (_lost_in_restart, _refused, _failed_unpublished):
        found = finder(ids, facts)
        if found is not None:
            return found
    decided = sorted(set(ids) & _in_ledger(facts))
    untraced = [o for o in ids if o not in set(decided)]
    kills = _kills(facts)
    if decided and not (untraced and kills):
        return _cause("outcome_not_delivered", f"{len(decided)} of them have an outcome in "
                                               f"the ledger (e.g. {decided[0]}) but no "
                                               "notification")
    if kills:
        # Most left no trace at all after a kill: acked before the work was done (the few
        # decided ones were acked too, and killed before their outcome went out).
        also = (f"; {len(decided)} more have an outcome in the ledger (e.g. {decided[0]}) "
                "but were never notified" if decided else "")
        which = "any of them" if not decided else f"{len(untraced)} of them"
        return _cause("ack_before_work", f"{_no_trace(facts, which)}{also}, after "
                                         f"{', '.join(kills[:3])}")
    unread = set(facts.get("unknown") or ())
    if facts.get("ledger") is not None and not unread & {"ledger", "dlq"}:
        return _cause("never_processed", "no ledger row and no DLQ copy for any of them, and "
                                         "no kill or restart in the run")
    return None


def _no_trace(facts: dict[str, Any], which: str) -> str:
    """'no ledger row and no DLQ copy for <which>', saying only what was looked at: a ledger
    or a DLQ that could not be read (a contract gap) is named as such, never as empty."""
    unknown = set(facts.get("unknown") or ())
    ledger, dlq = "ledger" not in unknown, "dlq" not in unknown
    if ledger and dlq:
        return f"no ledger row and no DLQ copy for {which}"
    if ledger:
        return f"no ledger row for {which} (there is no DLQ to look in)"
    if dlq:
        return f"no DLQ copy for {which} (the ledger, GET /reservations, could not be read)"
    return (f"no trace of {which} could be looked for (neither the ledger, GET /reservations, "
            "nor a DLQ could be read)")


def explain(key: str, ids: list[str], facts: dict[str, Any]) -> Cause | None:
    """The cause the run's evidence points to for an invariant broken by `ids`, or None."""
    if not ids:
        return None
    if key == "lost":
        return _explain_lost(ids, facts)
    if key == "valid_in_dlq":
        reasons = _dlq_reasons(facts, ids)
        clash = {o: r for o, r in reasons.items() if _KEY_CLASH.search(r)}
        if clash:
            oid, reason = next(iter(clash.items()))
            return _cause("pk_duplicate", f"DLQ reason for {oid}: {reason}")
        if reasons:
            oid, reason = next(iter(reasons.items()))
            return _cause("dead_lettered", f"DLQ reason for {oid}: {reason}")
        return None
    if key == "double_reservations":
        kills = [k for k in _kills(facts) if "inventory" in k or "broker" in k]
        if kills:
            return _cause("record_lost_in_restart", f"{len(ids)} orders reserved twice, after "
                                                    f"{', '.join(kills[:3])}")
        return _cause("no_duplicate_check", f"{len(ids)} orders with two ledger lines for one "
                                            "item, no restart of the inventory in the run")
    if key == "duplicate_notifications":
        twice = sorted(set(ids) & set(facts.get("decided_twice") or ()))
        if not twice:
            return _cause("notifier_not_idempotent", f"{len(ids)} orders notified more than once")
        kills = [k for k in _kills(facts) if "inventory" in k or "broker" in k]
        if not kills:  # decided twice with no restart: the duplicate rows name why
            return None
        return _cause("record_lost_in_restart", f"{len(twice)} of them were decided twice "
                                                "(two outcome events with different event ids "
                                                f"on inventory_events, e.g. {twice[0]}), after "
                                                f"{', '.join(kills[:3])}")
    if key in ("stock_negative", "failed_iff_short"):
        negative = [i for i, v in (facts.get("inventory") or {}).items()
                    if v.get("stock", 0) < 0]
        if key == "stock_negative" or negative:
            stock = facts.get("inventory") or {}
            below = ", ".join(f"{i} at {stock[i].get('stock')}" for i in negative) or str(ids)
            return _cause("no_stock_check", f"stock below zero: {below}")
        return _cause("wrong_failure", f"order {ids[0]} FAILED although the stock of its "
                                       "lines was there (or it was reserved when it was not)")
    if key == "outcomes_vs_ledger":
        ledger = facts.get("ledger") or {}
        failed = {o["order_id"] for o in ledger.get("outcomes", []) if o.get("reserved") is False}
        kept = sorted(failed & {r["order_id"] for r in ledger.get("reservations", [])}
                      & set(ids))
        if kept:
            return _cause("partial_reservation", f"FAILED order {kept[0]} has ledger lines "
                                                 f"({len(kept)} such orders)")
        return _cause("outcome_without_ledger", f"order {ids[0]} is RESERVED with no (or "
                                                "missing) ledger lines")
    if key == "ledger_forgot":
        kills = _kills(facts)
        return _cause("ledger_not_durable", f"{len(ids)} orders in a ledger snapshot before "
                                            f"{', '.join(kills[:2]) or 'a kill'}, not after")
    if key == "failed_flipped":
        return _explain_flipped(ids, facts)
    return None


def _explain_flipped(ids: list[str], facts: dict[str, Any]) -> Cause:
    """A FAILED order changed outcome on a republish: a fresh outcome with nothing reserved,
    or reserved anew (ledger lines)."""
    ledger = facts.get("ledger") or {}
    lines: dict[str, int] = {}
    for r in ledger.get("reservations", []):
        lines[r["order_id"]] = lines.get(r["order_id"], 0) + 1
    status = {o["order_id"]: o.get("status") for o in facts.get("orders") or []}
    reserved = {o["order_id"] for o in ledger.get("outcomes", []) if o.get("reserved") is True}
    fresh = [o for o in ids if not lines.get(o)]
    oid = (fresh or ids)[0]
    said = ([f"GET /order says {status[oid]}"] if status.get(oid) not in (None, "FAILED")
            else []) + (["the ledger's outcome says reserved"] if oid in reserved else [])
    head = (f"order {oid} was FAILED before its OrderPlaced was republished; after it "
            f"{' and '.join(said) or 'it is reserved'}")
    if fresh:
        return _cause("fresh_outcome", f"{head}, with 0 reservation lines in the ledger "
                                       f"({len(fresh)} such orders)")
    return _cause("reserved_on_duplicate", f"{head}, and the ledger holds {lines[oid]} "
                                           "reservation lines for it")


def root_causes(checks: list[Check]) -> list[tuple[str, str, list[Check]]]:
    """Failed checks grouped by cause (first seen first): one cause, every check it broke."""
    groups: dict[str, list[Check]] = {}
    for c in checks:
        if c.passed is False and c.cause:
            groups.setdefault(c.cause, []).append(c)
    return [(k, ADVICE.get(k, k), rows) for k, rows in groups.items()]
