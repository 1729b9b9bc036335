"""Idempotency modes of the lab's inventory compared (white-box: uses IDEMPOTENCY)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from harness.invariants import Verdict, check_run, double_reservations
from harness.lab import LabConfig
from harness.lab.impl import Impl, resolve
from harness.reporting import plots
from harness.reporting.results import ScenarioResult, run_folder
from harness.runner import Run, order_event
from harness.scenarios.common import PLENTY, barrier, broker_for, place_some
from harness.scenarios.registry import Scenario, register, require_lab
from harness.scenarios.summary import IdempotencySummary


def idempotency(broker: Any = None, *, orders: int = 10, modes: tuple[str, ...] = (
        "off", "memory", "sqlite"), out: str | Path = "runs", progress: bool = True,
        impl: Impl | str | Path | None = None, **lab: Any) -> ScenarioResult:
    """Republish K orders as exact and hand-made duplicates, per idempotency mode, with and
    without an inventory restart between original and duplicate; count double reservations."""
    require_lab(resolve(impl), "idempotency")
    rows, verdicts = [], {}
    parent = run_folder(out, "idempotency")
    with broker_for(broker) as b:
        for mode in tqdm(modes, desc="idempotency modes", disable=not progress):
            cfg = LabConfig(idempotency=mode, initial_stock=PLENTY, **lab)
            with Run(f"idempotency-{mode}", b, out=parent, lab=cfg, progress=False) as run:
                for case, restart in (("duplicates", False), ("after restart", True)):
                    placed = place_some(run, orders, seed=11 if restart else 10)
                    if restart:
                        run.faults.restart_service("inventory")
                    for order in placed:
                        run.faults.duplicate_order(order_event(order), same_event_id=True)
                        run.faults.duplicate_order(order_event(order), same_event_id=False)
                    barrier(run)
                    ledger = run.lab.reservations()
                    ids = {o["order_id"] for o in placed}
                    doubled = {o: n for o, n in double_reservations(ledger["reservations"]).items()
                               if o in ids}
                    rows.append({"mode": mode, "case": case, "orders": len(placed),
                                 "duplicates_sent": 2 * len(placed),
                                 "double_reservations": len(doubled),
                                 "extra_reservations": sum(n - 1 for n in doubled.values())})
                state = run.collect()
                accepted = [o["order_id"] for o in state.orders]
                verdicts[mode] = check_run(accepted=accepted, inventory=state.inventory,
                                           ledger=state.ledger,
                                           notifications=state.notifications, dlq=state.dlq,
                                           allow_double_reservations=mode != "sqlite")
    table = pd.DataFrame(rows)
    by = {(r["mode"], r["case"]): r["double_reservations"] for r in rows}
    problems = []
    for mode, v in verdicts.items():
        problems += [f"{mode}: {p}" for p in v.problems]
    # The teaching points: only the durable, transactional record reserves exactly once.
    if "sqlite" in modes and any(by[("sqlite", c)] for c in ("duplicates", "after restart")):
        problems.append("sqlite mode reserved an order twice")
    if "off" in modes and not by[("off", "duplicates")]:
        problems.append("off mode showed no double reservation (the duplicates did not arrive?)")
    if "memory" in modes and not by[("memory", "after restart")]:
        problems.append("memory mode showed no double reservation after a restart")
    if "memory" in modes and by[("memory", "duplicates")]:
        problems.append("memory mode double-reserved without a restart")
    summary = IdempotencySummary(
        scenario="idempotency", orders_per_case=orders,
        double_reservations={f"{m}/{c}": n for (m, c), n in by.items()},
        duplicate_notifications=sum(v.counts["duplicate_notifications"]
                                    for v in verdicts.values()),
        lost=sum(v.counts["lost"] for v in verdicts.values()),
        stock_conserved=all(v.counts["stock_conserved"] for v in verdicts.values()))
    verdict = Verdict(not problems, {"per_mode": {m: v.to_dict() for m, v in verdicts.items()}},
                      problems)
    result = ScenarioResult("idempotency", summary, verdict, {"double_reservations": table})
    result.figures = {"double_reservations": plots.double_reservations_chart(table)}
    result.write(parent)
    return result


register(Scenario("idempotency", idempotency, black_box=False, accepts_orders=False,
                  rank=30,
                  summary="duplicates per idempotency mode of the lab's inventory"))
