"""Invariants of a run: nothing lost, nothing notified or reserved twice, stock conserved,
and the dead-letter queue holding exactly what should be there."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Verdict:
    """`valid` true or false, with the counts that justify it and the problems found."""

    valid: bool
    counts: dict[str, Any]
    problems: list[str] = field(default_factory=list)
    # Which ids broke which invariant (lost, double_reserved, ...): the report card's evidence.
    evidence: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The verdict as plain JSON-able data."""
        return {"valid": self.valid, **self.counts, "problems": self.problems}

    def __str__(self) -> str:
        head = "VALID" if self.valid else "INVALID"
        return head + (": " + "; ".join(self.problems) if self.problems else "")


def double_reservations(reservations: list[dict[str, Any]]) -> dict[str, int]:
    """Orders whose stock was taken more than once: order id -> times reserved."""
    per_order_item = Counter((r["order_id"], r["item_id"]) for r in reservations)
    times: dict[str, int] = {}
    for (order_id, _item), n in per_order_item.items():
        if n > 1:
            times[order_id] = max(times.get(order_id, 0), n)
    return times


def stock_conserved(inventory: dict[str, Any], reservations: list[dict[str, Any]]) -> bool:
    """True iff for every item: initial stock - everything reserved == current stock."""
    taken = Counter()
    for r in reservations:
        taken[r["item_id"]] += r["quantity"]
    return all(v["initial"] - taken.get(k, 0) == v["stock"] for k, v in inventory.items())


def _dlq_order_id(message: dict[str, Any]) -> str | None:
    try:
        body = json.loads(message["body"])
    except (ValueError, TypeError):
        return None
    return body.get("order_id") if isinstance(body, dict) else None


def check_run(
    *,
    accepted: list[str],
    inventory: dict[str, Any],
    ledger: dict[str, Any],
    notifications: list[dict[str, Any]],
    dlq: list[dict[str, Any]],
    malformed_injected: int = 0,
    expected_dead: set[str] | None = None,
    allow_double_reservations: bool = False,
) -> Verdict:
    """Judge a run from what the API accepted and what the services and the DLQ hold.

    `expected_dead` are order ids deliberately made to fail (poison messages): they belong
    in the DLQ, not among the notified. With `allow_double_reservations` a run that shows a
    naive design's double reservation is still judged on the other invariants (the
    scenario's own teaching point then checks the count).
    """
    expected_dead = expected_dead or set()
    reservations = ledger["reservations"]
    notified_ids = [n["order_id"] for n in notifications]
    notified = set(notified_ids)
    must_notify = [o for o in accepted if o not in expected_dead]
    lost = sorted(set(must_notify) - notified)
    dup_notes = {o: n for o, n in Counter(notified_ids).items() if n > 1}
    doubles = double_reservations(reservations)
    conserved = stock_conserved(inventory, reservations)
    dlq_ids = [_dlq_order_id(m) for m in dlq]
    valid_in_dlq = sorted({o for o in dlq_ids if o and o in set(accepted)} - expected_dead)
    malformed_in_dlq = sum(1 for m in dlq if not (_dlq_order_id(m) in set(accepted)
                                                  or _dlq_order_id(m) in expected_dead))
    dead_found = sorted({o for o in dlq_ids if o in expected_dead})
    outcomes = {o["order_id"]: o for o in ledger.get("outcomes", [])}
    counts = {
        "orders_placed": len(accepted),
        "reserved": sum(1 for o in accepted if outcomes.get(o, {}).get("reserved") is True),
        "failed": sum(1 for o in accepted if outcomes.get(o, {}).get("reserved") is False),
        "notified": len(notified & set(accepted)),
        "notified_unaccepted": len(notified - set(accepted)),
        "dlq_messages": len(dlq),
        "malformed_injected": malformed_injected,
        "malformed_in_dlq": malformed_in_dlq,
        "valid_orders_in_dlq": len(valid_in_dlq),
        "expected_dead_letters": len(expected_dead),
        "dead_letters_found": len(dead_found),
        "lost": len(lost),
        "duplicate_notifications": sum(n - 1 for n in dup_notes.values()),
        "double_reservations": len(doubles),
        "stock_conserved": conserved,
    }
    problems = []
    if lost:
        problems.append(f"{len(lost)} accepted orders never notified (e.g. {lost[:3]})")
    if dup_notes:
        problems.append(f"{len(dup_notes)} orders notified more than once")
    if doubles and not allow_double_reservations:
        problems.append(f"{len(doubles)} orders reserved stock twice (e.g. {list(doubles)[:3]})")
    if not conserved:
        problems.append("stock not conserved: initial - reserved != current")
    if valid_in_dlq:
        problems.append(f"{len(valid_in_dlq)} valid orders in the DLQ (e.g. {valid_in_dlq[:3]})")
    if malformed_in_dlq != malformed_injected:
        problems.append(f"DLQ holds {malformed_in_dlq} malformed messages, "
                        f"{malformed_injected} were injected")
    if len(dead_found) != len(expected_dead):
        problems.append(f"{len(expected_dead) - len(dead_found)} poison orders missing "
                        "from the DLQ")
    evidence = {"lost": lost, "duplicate_notified": sorted(dup_notes),
                "double_reserved": sorted(doubles), "valid_in_dlq": valid_in_dlq}
    return Verdict(not problems, counts, problems, evidence)


@dataclass
class Check:
    """One row of a report card: what was tried, what was expected, what happened.

    `passed` is None when the check could not be run (a service never became healthy, a
    time-out): the card then says so instead of guessing.
    """

    scenario: str
    name: str
    tried: str
    expected: str
    happened: str
    passed: bool | None
    evidence: dict[str, Any] = field(default_factory=dict)
    chart: str | None = None  # a figure name of the scenario's result

    def to_dict(self) -> dict[str, Any]:
        """The check as plain JSON-able data."""
        return {"scenario": self.scenario, "name": self.name, "tried": self.tried,
                "expected": self.expected, "happened": self.happened, "passed": self.passed,
                "evidence": self.evidence, "chart": self.chart}


def _ids(ids: list[str], limit: int = 5) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


# What each invariant means to a student, and the question to ask when it breaks. A
# scenario gives its own words for the ones it is about; these are the defaults.
DEFAULT_HINTS = {
    "lost": "{n} orders answered 201 were never notified ({ids}): an accepted order must "
            "reach its notification",
    "duplicate_notifications": "{n} orders were notified more than once ({ids}): the "
                               "notification service must ignore a repeated outcome",
    "double_reservations": "{n} orders had their stock reserved twice ({ids}): the inventory "
                           "must reserve each order once, however often it arrives",
    "stock_conserved": "the stock does not add up: initial stock minus everything in the "
                       "reservation ledger differs from the current stock",
    "valid_in_dlq": "{n} valid orders ended in the DLQ ({ids}): only bad messages belong there",
}

INVARIANTS = {
    "lost": ("nothing lost", "every order answered 201 is notified exactly once"),
    "duplicate_notifications": ("no duplicate notification", "one notification per order"),
    "double_reservations": ("no double reservation", "each order's stock is reserved once"),
    "stock_conserved": ("stock conserved", "initial - reserved == current, for every item"),
    "valid_in_dlq": ("no valid order dead-lettered", "the DLQ holds no valid order"),
}


def invariant_checks(scenario: str, tried: str, verdict: Verdict, *,
                     hints: dict[str, str] | None = None, chart: str | None = None,
                     only: tuple[str, ...] = tuple(INVARIANTS)) -> list[Check]:
    """One Check per invariant of check_run, worded for a student."""
    words = {**DEFAULT_HINTS, **(hints or {})}
    c, ev = verdict.counts, verdict.evidence
    failing = {
        "lost": ev.get("lost", []),
        "duplicate_notifications": ev.get("duplicate_notified", []),
        "double_reservations": ev.get("double_reserved", []),
        "valid_in_dlq": ev.get("valid_in_dlq", []),
    }
    rows = []
    for key in only:
        name, expected = INVARIANTS[key]
        if key == "stock_conserved":
            ok = bool(c.get("stock_conserved"))
            ids: list[str] = []
        else:
            ids = list(failing[key])
            ok = not ids
        if ok:
            happened = _passed_words(key, c)
        else:
            happened = words[key].format(n=len(ids), ids=_ids(ids), first=ids[0] if ids else "")
        rows.append(Check(scenario, name, tried, expected, happened, ok,
                          {"order_ids": ids[:20], "orders_placed": c.get("orders_placed"),
                           "notified": c.get("notified")}, chart))
    return rows


def _passed_words(key: str, c: dict[str, Any]) -> str:
    if key == "lost":
        return f"all {c.get('orders_placed')} accepted orders were notified"
    if key == "duplicate_notifications":
        return "no order was notified twice"
    if key == "double_reservations":
        return "no order was reserved twice"
    if key == "stock_conserved":
        return "the stock adds up for every item"
    return "no valid order in the DLQ"
