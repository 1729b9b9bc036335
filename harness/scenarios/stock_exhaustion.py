"""Stock exhaustion: orders until the items they ask for run out, one at a time (black-box).

Each order waits for its notification before the next is placed, so the order in which
the inventory handled them is known, and so is the outcome the stock calls for: RESERVED
iff every line fits in what is left, all or nothing (a FAILED order keeps no line). The
stock must never go below zero, and the ledger must hold exactly the RESERVED orders' lines.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from harness.invariants import Check, expected_outcomes, invariant_checks
from harness.lab import LabConfig
from harness.lab.impl import Impl
from harness.reporting.results import ScenarioResult
from harness.runner import Run
from harness.scenarios.common import broker_for, finish, judge
from harness.scenarios.registry import Scenario, register
from harness.scenarios.summary import RunSummary

NAME = "stock-exhaustion"
STOCK = "6"  # of every item (INITIAL_STOCK is one number, as the contract says)
SCARCE = ("item_1", "item_2", "item_3")  # the items ordered: they run out within a few orders


def order_lines(orders: int, seed: int) -> list[list[dict[str, Any]]]:
    """The orders' lines: one or two of the scarce items, 1-3 of each, so that an order
    often has a line that would fit beside one that does not (all or nothing)."""
    rng = random.Random(seed)
    return [[{"item_id": item, "quantity": rng.randint(1, 3), "price": 1.0}
             for item in rng.sample(SCARCE, k=rng.randint(1, 2))] for _ in range(orders)]


def stock_exhaustion(broker: Any = None, *, orders: int = 16, seed: int = 5,
                     out: str | Path = "runs", progress: bool = True,
                     impl: Impl | str | Path | None = None, **lab: Any) -> ScenarioResult:
    """Place orders one at a time until the scarce items run out; judge every outcome."""
    cfg = LabConfig(initial_stock=STOCK, **lab)
    with broker_for(broker) as b, Run(NAME, b, out=out, lab=cfg, impl=impl,
                                      progress=progress) as run:
        # The stock the inventory says it starts from (whether or not it took INITIAL_STOCK).
        initial = {k: int(v["stock"]) for k, v in run.lab.inventory().items()}
        placed, rows = [], []
        for i, lines in enumerate(order_lines(orders, seed)):
            sent = time.monotonic() - run.t0
            r = run.lab.place_order(f"exhaust-{i:03d}", lines)
            rows.append({"order_id": (r.json().get("order_id") if r.status_code in (201, 202)
                                      else None), "accepted": r.status_code in (201, 202),
                         "status": r.status_code, "t_sent": sent,
                         "http_ms": r.elapsed.total_seconds() * 1e3, "items": lines})
            if not rows[-1]["accepted"]:
                continue
            placed.append({"order_id": rows[-1]["order_id"], "items": lines})
            # One at a time: the next order is placed once this one's outcome is known.
            if not run.wait_notified([rows[-1]["order_id"]], timeout=30):
                break
        expected = expected_outcomes(placed, initial)
        load = pd.DataFrame(rows)
        accepted = [p["order_id"] for p in placed]
        state = run.collect()
        verdict = judge(run, state, accepted, expected=expected)
        frames = run.frames(load, state)
        frames["outcomes"] = pd.DataFrame(
            [{"order_id": p["order_id"], "lines": len(p["items"]),
              "expected": "RESERVED" if expected[p["order_id"]] else "FAILED"} for p in placed])
        summary = RunSummary(**run.base_summary(load, state, verdict, frames["latency"]))
        result = ScenarioResult(NAME, summary, verdict, frames)
        result.figures = {"stock": _stock_chart(initial, state.inventory)}
        short = sum(1 for v in expected.values() if not v)
        tried = (f"set the stock of {', '.join(f'{k} to {initial.get(k)}' for k in SCARCE)}, "
                 f"then placed {len(placed)} orders one at a time (each waited for), {short} "
                 "of which the stock could not cover")
        result.checks = invariant_checks(NAME, tried, verdict, only=(
            "lost", "failed_iff_short", "stock_negative", "outcomes_vs_ledger",
            "stock_conserved", "double_reservations"))
        if not short:
            result.checks.append(Check(
                NAME, "stock ran short", tried, "some orders ask for more than is left",
                f"skipped: the stock never ran short (the inventory started from {initial}: "
                "it may not honour INITIAL_STOCK), so FAILED was never called for", None,
                {"skipped": True, "incomplete": True, "initial": initial}))
        return finish(run, result)


def _stock_chart(initial: dict[str, int], inventory: dict[str, Any]) -> Figure:
    """Each scarce item's stock before and after: it may reach zero, never go below."""
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    names = list(SCARCE)
    before = [initial.get(k, 0) for k in names]
    after = [int(inventory.get(k, {}).get("stock", 0)) for k in names]
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], before, width=0.4, label="before", color="tab:blue")
    ax.bar([i + 0.2 for i in x], after, width=0.4, label="after",
           color=["tab:red" if a < 0 else "tab:green" for a in after])
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(list(x), names)
    ax.set_ylabel("stock")
    ax.set_title("Stock of the scarce items: down to zero, never below")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


register(Scenario(NAME, stock_exhaustion, black_box=True,
                  ci_kwargs={"orders": 10},
                  rank=15,
                  summary="orders until stock runs out: FAILED exactly when short, all or "
                          "nothing, never below zero"))
