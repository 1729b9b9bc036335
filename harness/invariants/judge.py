"""Judge one scenario run: `check_run` turns what it recorded into a `Verdict`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from harness.invariants.findings import dlq_order_id, double_reservations, shared_findings
from harness.invariants.record import INVARIANTS, Verdict


def check_run(
    *,
    accepted: list[str],
    inventory: dict[str, Any],
    ledger: dict[str, Any] | None,
    notifications: list[dict[str, Any]],
    dlq: list[dict[str, Any]],
    malformed_injected: int = 0,
    expected_dead: set[str] | None = None,
    allow_double_reservations: bool = False,
    orders: list[dict[str, Any]] | None = None,
    ledger_snapshots: list[list[dict[str, Any]]] | None = None,
    must_stay_failed: Iterable[str] = (),
    expected: dict[str, bool] | None = None,
    facts: dict[str, Any] | None = None,
) -> Verdict:
    """Judge a run from what the API accepted and what the services and the DLQ hold.

    `expected_dead` are order ids deliberately made to fail (poison messages): they belong
    in the DLQ, not among the notified. With `allow_double_reservations` a run that shows a
    naive design's double reservation is still judged on the other invariants (the
    scenario's own teaching point then checks the count). `orders` (GET /orders) lets the
    outcomes be compared line by line; `ledger_snapshots` are GET /reservations rows taken
    before each kill; `must_stay_failed` are FAILED orders that were republished;
    `expected` is each order's outcome as the stock calls for it (stock-exhaustion).
    """
    expected_dead = expected_dead or set()
    found = shared_findings(accepted=accepted, inventory=inventory, ledger=ledger,
                            notifications=notifications, dlq=dlq, orders=orders,
                            expected_dead=expected_dead, ledger_snapshots=ledger_snapshots,
                            must_stay_failed=must_stay_failed, expected=expected)
    ledger = ledger if isinstance(ledger, dict) else {}
    reservations = ledger.get("reservations") or []
    notified_ids = [n["order_id"] for n in notifications]
    notified = set(notified_ids)
    dlq_ids = [dlq_order_id(m) for m in dlq]
    malformed_in_dlq = sum(1 for o in dlq_ids if not (o in set(accepted) or o in expected_dead))
    dead_found = sorted({o for o in dlq_ids if o in expected_dead})
    outcomes = {o["order_id"]: o for o in ledger.get("outcomes", [])}
    doubles = double_reservations(reservations, orders)
    counts = {
        "orders_placed": len(accepted),
        "reserved": sum(1 for o in accepted if outcomes.get(o, {}).get("reserved") is True),
        "failed": sum(1 for o in accepted if outcomes.get(o, {}).get("reserved") is False),
        "notified": len(notified & set(accepted)),
        "notified_unaccepted": len(notified - set(accepted)),
        "dlq_messages": len(dlq),
        "malformed_injected": malformed_injected,
        "malformed_in_dlq": malformed_in_dlq,
        "valid_orders_in_dlq": len(found["valid_in_dlq"]),
        "expected_dead_letters": len(expected_dead),
        "dead_letters_found": len(dead_found),
        "lost": len(found["lost"]),
        "duplicate_notifications": sum(n - 1 for n in Counter(notified_ids).values() if n > 1),
        "double_reservations": len(doubles),
        # None: not judged (the inventory or the ledger could not be read).
        "stock_conserved": (not found["stock_conserved"]) if "stock_conserved" in found
        else None,
        "stock_negative": len(found.get("stock_negative", [])),
        "outcomes_vs_ledger": len(found.get("outcomes_vs_ledger", [])),
        "ledger_forgot": len(found.get("ledger_forgot", [])),
        "failed_flipped": len(found.get("failed_flipped", [])),
        "failed_iff_short": len(found.get("failed_iff_short", [])),
    }
    judged = dict(found)
    if allow_double_reservations:
        judged.pop("double_reservations", None)
    if not ledger_snapshots:
        judged.pop("ledger_forgot", None)
    if not must_stay_failed:
        judged.pop("failed_flipped", None)

    problems = [f"{INVARIANTS[k].name}: {INVARIANTS[k].broken_words(ids)}"
                for k, ids in judged.items() if ids]
    if malformed_in_dlq != malformed_injected:
        problems.append(f"DLQ holds {malformed_in_dlq} malformed messages, "
                        f"{malformed_injected} were injected")
    if len(dead_found) != len(expected_dead):
        problems.append(f"{len(expected_dead) - len(dead_found)} poison orders missing "
                        "from the DLQ")
    all_facts = {"dlq": dlq, "ledger": ledger, "notifications": notifications,
                 "inventory": inventory, "orders": orders or [], "expected": expected or {},
                 **(facts or {})}
    return Verdict(not problems, counts, problems, judged, all_facts)
