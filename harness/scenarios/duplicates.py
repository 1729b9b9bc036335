"""Duplicates: republish orders as exact copies and as copies with a new event_id (black-box).

`restart_idempotency` does the same after restarting the inventory, which is where an
in-memory processed-order record forgets.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from harness.invariants import Check, double_reservations, invariant_checks
from harness.lab import LabConfig
from harness.lab.client import MissingPath
from harness.lab.impl import Impl
from harness.reporting import plots
from harness.reporting.results import ScenarioResult
from harness.runner import Run, order_event
from harness.scenarios.common import barrier, broker_for, finish, judge, place_some
from harness.scenarios.loops import OutcomeTap, twice_check
from harness.scenarios.registry import Scenario, register
from harness.scenarios.summary import DuplicatesSummary

CASES = (("exact copy", True), ("copy with a new event_id", False))
# Stock for the few orders placed (INITIAL_STOCK is one number for every item, as the
# contract says), and one order asking for more than that: it fails for want of stock, and
# its OrderPlaced is republished with the others: a FAILED order must stay FAILED.
STOCK = "500"
TOO_MUCH = {"item_id": "item_4", "quantity": 1000, "price": 1.0}  # the most one line may ask


def duplicates(broker: Any = None, *, orders: int = 10, restart: bool = False,
               out: str | Path = "runs", progress: bool = True,
               impl: Impl | str | Path | None = None, **lab: Any) -> ScenarioResult:
    """Republish N processed orders twice over (same event_id, then a new one) and count
    the orders whose stock was reserved again; with `restart`, restart the inventory first."""
    name = "restart-idempotency" if restart else "duplicates"
    cfg = LabConfig(initial_stock=STOCK, **lab)
    with broker_for(broker) as b, Run(name, b, out=out, lab=cfg, impl=impl,
                                      progress=progress) as run:
        # Every outcome event on the wire: an order decided twice shows without a ledger.
        tap = OutcomeTap(run)
        placed = place_some(run, orders, seed=12 if restart else 10)
        placed.append(_place_sold_out(run))
        ids = {o["order_id"] for o in placed}
        # FAILED before any copy arrives: each must still be FAILED after its copies.
        failed_before = sorted(o["order_id"] for o in placed if o.get("status") == "FAILED")
        if restart:
            run.faults.restart_service("inventory")
        rows, doubled_by_case = [], {}
        before = _ledger_lines(run, ids)
        for case, same_id in CASES:
            for order in placed:
                run.faults.duplicate_order(order_event(order), same_event_id=same_id)
            barrier(run)
            after = _ledger_lines(run, ids)
            # Reserved again by this case's copies: a ledger line counted more than before.
            # None: no ledger to read (GET /reservations missing), so not judged.
            doubled_by_case[case] = None if after is None else sorted(
                {o for (o, i), n in after.items() if n > (before or {}).get((o, i), 0)})
            before = after
            rows.append({"case": case, "orders": len(placed), "duplicates_sent": len(placed),
                         "double_reservations": len(doubled_by_case[case] or [])})
        tap.close()
        state = run.collect()
        seen = set(double_reservations((state.ledger or {}).get("reservations") or [])) & ids
        accepted = [o["order_id"] for o in state.orders]
        # Orders the tap saw decided twice: their doubled notifications are no redelivery.
        verdict = judge(run, state, accepted, must_stay_failed=failed_before,
                        more_facts={"decided_twice": tap.decided_twice(ids)})
        load = pd.DataFrame({"order_id": accepted, "accepted": True, "http_ms": float("nan")})
        table = pd.DataFrame(rows).assign(mode=run.impl.name)
        summary = DuplicatesSummary(
            **run.base_summary(load, state, verdict, pd.DataFrame()), restarted_first=restart,
            originals=len(placed), exact_copies_sent=len(placed), new_id_copies_sent=len(placed),
            reserved_twice=sorted(seen))
        result = ScenarioResult(name, summary, verdict, {"double_reservations": table})
        result.figures = {"double_reservations": plots.double_reservations_chart(table)}
        result.checks = _checks(name, restart, len(placed), doubled_by_case, verdict)
        result.checks.append(twice_check(name, result.checks[0].tried, tap, ids, restart))
        return finish(run, result)


def _ledger_lines(run: Run, ids: set[str]) -> Counter | None:
    """The ledger lines of the given orders, or None without GET /reservations (a gap)."""
    try:
        return _lines_reserved(run.lab.reservations()["reservations"], ids)
    except MissingPath:
        return None


def _place_sold_out(run: Run) -> dict[str, Any]:
    """Place one order for more than the stock, wait for its outcome, return the order as
    the order API has it (FAILED, unless the inventory holds more than 1000 of item_4)."""
    r = run.lab.place_order("too-much", [TOO_MUCH])
    r.raise_for_status()
    order_id = r.json()["order_id"]
    run.lab.wait_notified([order_id], timeout=30)
    notes = [n for n in run.lab.notifications() if n["order_id"] == order_id]
    order = run.lab.get("order", f"/order/{order_id}")
    # The order service may not consume order_status (optional): the notification says.
    if notes and notes[-1].get("status"):
        order = {**order, "status": notes[-1]["status"]}
    return order


def _lines_reserved(ledger: list[dict[str, Any]], ids: set[str]) -> Counter:
    """How often each (order, item) line of the given orders is in the ledger."""
    return Counter((r["order_id"], r["item_id"]) for r in ledger if r["order_id"] in ids)


def _checks(name: str, restart: bool, n: int, doubled: dict[str, list[str] | None],
            verdict: Any) -> list[Check]:
    before = "restarted the inventory (SIGTERM, start), then " if restart else ""
    rows = []
    exact_doubled = bool(doubled[CASES[0][0]])
    for case, same in CASES:
        ids = doubled[case]
        tried = (f"placed {n} orders and waited for their notifications, {before}published "
                 f"each OrderPlaced again as an {case}")
        cause = None
        if ids is None:
            rows.append(Check(name, f"{case}: not reserved twice", tried,
                              "each order's stock is reserved once",
                              "not judged: the inventory has no GET /reservations", None,
                              {"not_judged": True, "needs": ["ledger"]}, "double_reservations",
                              "double_reservations"))
            continue
        if not ids:
            happened = f"none of the {n} orders was reserved again"
        elif not same and not exact_doubled:
            # Exact copies were recognised, copies with a new event_id were not: the record
            # is there (and survived any restart), keyed by the wrong field.
            cause = "keyed_on_event_id"
            happened = (f"order {ids[0]} was reserved twice when it was republished with a new "
                        f"event_id, while exact copies were recognised ({len(ids)} orders in "
                        "all): recognise an order by its order_id, not by the event_id")
        elif restart:
            cause = "record_lost_in_restart"
            happened = (f"order {ids[0]} was reserved again by a copy of a message it had "
                        f"handled before the inventory restarted ({len(ids)} orders in all): "
                        "your processed-order record did not survive the restart")
        else:
            cause = "no_duplicate_check"
            happened = (f"order {ids[0]} was reserved twice when the same order arrived "
                        f"again ({len(ids)} orders in all): RabbitMQ redelivers, so check "
                        "whether you processed the order before reserving")
        rows.append(Check(name, f"{case}: not reserved twice", tried,
                          "each order's stock is reserved once", happened, not ids,
                          {"order_ids": ids[:20], "copies_sent": n}, "double_reservations",
                          "double_reservations", cause))
    tried = f"{before}republished {n} processed orders twice each".strip()
    rows += invariant_checks(name, tried, verdict, only=("lost", "duplicate_notifications",
                                                         "stock_conserved", "failed_flipped"),
                             hints={
        "duplicate_notifications": "{n} orders were notified more than once after their "
                                   "OrderPlaced was republished ({ids}): the notification "
                                   "service must ignore an outcome it has seen"})
    return rows


def restart_idempotency(broker: Any = None, *, orders: int = 10, out: str | Path = "runs",
                        progress: bool = True, impl: Impl | str | Path | None = None,
                        **lab: Any) -> ScenarioResult:
    """Republish processed orders after the inventory restarts: nothing reserved twice."""
    return duplicates(broker, orders=orders, restart=True, out=out, progress=progress,
                      impl=impl, **lab)


register(Scenario("duplicates", duplicates, black_box=True,
                  ci_kwargs={"orders": 5},
                  rank=70,
                  summary="orders republished: exact copies and copies with a new event_id"))
register(Scenario("restart-idempotency", restart_idempotency, black_box=True,
                  ci_kwargs={"orders": 5},
                  rank=80,
                  summary="orders republished after the inventory restarts"))
