"""Baseline: place N orders and follow each to its notification (black-box)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.invariants import invariant_checks
from harness.lab.impl import Impl
from harness.load import LoadSpec
from harness.reporting import plots
from harness.reporting.results import ScenarioResult
from harness.runner import Run
from harness.scenarios.common import broker_for, finish
from harness.scenarios.registry import Scenario, register
from harness.scenarios.summary import RunSummary


def baseline(broker: Any = None, *, orders: int = 200, rate: float | None = None,
             concurrency: int = 4, seed: int = 42, out: str | Path = "runs",
             progress: bool = True, impl: Impl | str | Path | None = None,
             replicas: dict[str, int] | None = None, **lab: Any) -> ScenarioResult:
    """Place N orders and follow each to its notification: the pipeline working normally."""
    with broker_for(broker) as b, Run("baseline", b, out=out, progress=progress, impl=impl,
                                      replicas=replicas, **lab) as run:
        load = run.place(LoadSpec(orders=orders, rate=rate, concurrency=concurrency, seed=seed))
        accepted = load.loc[load["accepted"], "order_id"].tolist()
        run.wait_notified(accepted, timeout=30 + orders / 20)
        state = run.collect()
        verdict = run.judge(load, state)
        frames = run.frames(load, state)
        summary = RunSummary(**run.base_summary(load, state, verdict, frames["latency"]))
        result = ScenarioResult("baseline", summary, verdict, frames)
        result.figures = {
            "queue_depth": plots.depth_chart(frames["queue_depth"], run.timeline.frame(),
                                             title="Queue depth during the baseline run"),
            "latency_cdf": plots.latency_cdf(frames["latency"]),
        }
        refused = int((~load["accepted"]).sum())
        tried = f"placed {orders} valid orders over HTTP and waited for their notifications"
        result.checks = [
            _accepts(tried, orders, refused, load),
            *invariant_checks("baseline", tried, verdict, chart="latency_cdf", hints={
                "lost": "{n} of the orders answered 201 were never notified ({ids}), with no "
                        "fault at all: follow one through order_placed, the inventory and "
                        "inventory_events in the service logs"}),
        ]
        return finish(run, result)


def _accepts(tried: str, orders: int, refused: int, load: Any):
    from harness.invariants import Check
    statuses = load["status"].value_counts(dropna=False).to_dict()
    happened = (f"all {orders} orders answered 201" if not refused else
                f"{refused} of {orders} orders were refused (statuses {statuses}): a valid "
                "order on a healthy broker must be accepted")
    return Check("baseline", "valid orders accepted", tried, "201 Created for every valid order",
                 happened, not refused, {"statuses": {str(k): int(v) for k, v in statuses.items()}})


register(Scenario("baseline", baseline, black_box=True,
                  ci_kwargs={"orders": 20},
                  rank=10,
                  summary="N orders, each followed to its notification"))
