"""Crash the lab's inventory at named points (white-box: uses LAB_CRASH_AT)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from harness.invariants import Verdict
from harness.lab import LabConfig
from harness.lab.impl import Impl, resolve
from harness.reporting import plots
from harness.reporting.results import ScenarioResult, run_folder
from harness.runner import Run
from harness.scenarios.common import PLENTY, barrier, broker_for
from harness.scenarios.registry import Scenario, register, require_lab
from harness.scenarios.summary import CrashWindowSummary
from lab_services.crashpoints import CRASH_EXIT_CODE, POINTS


def crash_window(broker: Any = None, *, modes: tuple[str, ...] = ("off", "memory", "skip",
                                                                   "sqlite"),
                 points: tuple[str, ...] = POINTS, out: str | Path = "runs",
                 progress: bool = True, impl: Impl | str | Path | None = None,
                 **lab: Any) -> ScenarioResult:
    """Crash the inventory at each named point while it handles an order, restart it, and
    see per design whether the order's notification is lost or its stock taken twice."""
    require_lab(resolve(impl), "crash-window")
    rows = []
    parent = run_folder(out, "crash-window")
    with broker_for(broker) as b:
        for mode in tqdm(modes, desc="crash windows per design", disable=not progress):
            cfg = LabConfig(idempotency=mode, initial_stock=PLENTY, **lab)
            with Run(f"crash-window-{mode}", b, out=parent, lab=cfg, progress=False) as run:
                inventory = run.lab.services["inventory"]
                for point in points:
                    run.faults.restart_service("inventory", env={"LAB_CRASH_AT": f"{point}:*"})
                    r = run.lab.place_order(f"victim-{point}",
                                            [{"item_id": "item_1", "quantity": 1, "price": 10}])
                    r.raise_for_status()
                    victim = r.json()["order_id"]
                    code = inventory.wait_exit(30)
                    run.faults.crashed("inventory", point, victim)
                    run.faults.start_service("inventory", env={"LAB_CRASH_AT": ""})
                    barrier(run)
                    notes = [n for n in run.lab.notifications() if n["order_id"] == victim]
                    ledger = run.lab.reservations()["reservations"]
                    taken = sum(1 for x in ledger if x["order_id"] == victim)
                    rows.append({"mode": mode, "point": point, "order_id": victim,
                                 "exit_code": code, "crashed": code == CRASH_EXIT_CODE,
                                 "notified": len(notes), "lost": int(not notes),
                                 "times_reserved": taken,
                                 "double_reservation": int(taken > 1)})
    table = pd.DataFrame(rows)
    problems = []
    if not table["crashed"].all():
        problems.append("some crash points did not fire")
    sqlite = table[table["mode"] == "sqlite"]
    if (sqlite["lost"] > 0).any() or (sqlite["double_reservation"] > 0).any():
        problems.append("sqlite mode lost a notification or reserved twice")
    summary = CrashWindowSummary(
        scenario="crash-window",
        lost={f"{r.mode}/{r.point}": r.lost for r in table.itertuples()},
        double_reservations={f"{r.mode}/{r.point}": r.double_reservation
                             for r in table.itertuples()},
        sqlite_valid_at_every_point=not problems)
    verdict = Verdict(not problems, {"cases": len(table)}, problems)
    result = ScenarioResult("crash-window", summary, verdict, {"crash_window": table})
    result.figures = {
        "crash_lost": plots.outcome_table_chart(
            table, "lost", "Crash after commit, before publish: a dropped redelivery "
            "loses the notification", "notifications lost"),
        "crash_double": plots.outcome_table_chart(
            table, "double_reservation", "Without a durable record, a redelivery after a "
            "crash reserves again", "orders reserved twice"),
    }
    result.write(parent)
    return result


# Quick: without "off", whose rows repeat "memory"'s (both reserve again after a crash).
register(Scenario("crash-window", crash_window, black_box=False, accepts_orders=False,
                  ci_kwargs={"modes": ("memory", "skip", "sqlite")}, rank=40,
                  summary="crash points per idempotency mode of the lab's inventory"))
