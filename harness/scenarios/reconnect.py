"""Reconnect: restart the broker mid-stream; the services must reconnect by themselves."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from harness.invariants import Check, Verdict, invariant_checks
from harness.lab import LabConfig
from harness.lab.impl import Impl
from harness.load import LoadSpec
from harness.reporting import plots
from harness.reporting.results import ScenarioResult
from harness.runner import Run
from harness.scenarios.common import PLENTY, broker_for, finish, judge
from harness.scenarios.held_outcomes import HeldOutcomes, hold_outcomes_through_restart
from harness.scenarios.registry import Scenario, register
from harness.scenarios.summary import ReconnectSummary
from lab_services import topology as topo


def reconnect(broker: Any = None, *, orders: int = 300, rate: float = 40.0,
              outage_after_s: float = 2.0, how: str = "kill", held_orders: int = 10,
              out: str | Path = "runs", progress: bool = True,
              impl: Impl | str | Path | None = None, **lab: Any) -> ScenarioResult:
    """Restart the broker mid-stream: services reconnect by themselves, the load client
    retries refused orders, and nothing accepted is lost. Then, unless `held_orders` is 0
    (notebook 05 shows the mid-stream restart alone), restart it again while that many
    orders' outcomes wait in their queues with the notification service stopped
    (harness.scenarios.held_outcomes): transient outcomes are lost there."""
    cfg = LabConfig(initial_stock=PLENTY, **lab)
    with broker_for(broker) as b:
        if not getattr(b, "can_stop", True):
            raise RuntimeError("the reconnect scenario needs a broker it can stop "
                               "(local or docker), not a URL")
        with Run("reconnect", b, out=out, lab=cfg, impl=impl, progress=progress) as run:
            return _run(run, orders, rate, outage_after_s, how, held_orders)


def _run(run: Run, orders: int, rate: float, outage_after_s: float, how: str,
         held_orders: int) -> ScenarioResult:
    pids = {n: s.proc.pid for n, s in run.lab.services.items()}
    result_box: dict[str, pd.DataFrame] = {}
    spec = LoadSpec(orders=orders, rate=rate, concurrency=8, seed=31,
                    retry_unavailable_for=60.0, description="orders through an outage")
    loader = threading.Thread(target=lambda: result_box.update(load=run.place(spec)))
    loader.start()
    run.wait_depth(topo.QUEUE_ORDER_PLACED, lambda n: True, 5, "broker reachable")
    run.hold(outage_after_s)  # let the stream establish itself before the outage
    if how == "kill":
        run.faults.kill_broker()
    else:
        run.faults.stop_broker()
    run.faults.start_broker()
    run.timeline.record("ready", "broker", "takes connections again")
    unhealthy = []
    for name, svc in run.lab.services.items():
        try:
            svc.wait_healthy(60)
            run.timeline.record("healthy", name, "reconnected")
        except RuntimeError:  # ServiceFailed: it died, or never answered again
            unhealthy.append(name)
    loader.join()
    load = result_box["load"]
    accepted = load.loc[load["accepted"], "order_id"].tolist()
    run.wait_notified(accepted, timeout=60)
    # Judged now: the step below restarts the notification service on purpose.
    same_pids = all(run.lab.services[n].proc.pid == p and run.lab.services[n].running
                    for n, p in pids.items())
    reconnects = {n: (svc.health() or {}).get("reconnects")
                  for n, svc in run.lab.services.items()}
    gone = [n for n in pids if n in unhealthy or not run.lab.services[n].running]
    held = HeldOutcomes(skipped="not asked for")
    if held_orders:
        held = hold_outcomes_through_restart(run, held_orders)
        run.wait_notified(held.accepted, timeout=10)
    state = run.collect()
    state = replace(state, notifications=held.notifications(state.notifications))
    verdict = judge(run, state, accepted + held.accepted, more_facts=held.facts())
    problems = list(verdict.problems)
    if not same_pids:
        problems.append("a service was restarted or died; it should have reconnected by itself")
    # Only the lab's own services report their reconnects; others are judged by behaviour.
    if run.impl.is_lab and not all(reconnects.values()):
        problems.append(f"not every service reports a reconnect: {reconnects}")
    verdict = Verdict(not problems, verdict.counts, problems, verdict.evidence, verdict.facts)
    frames = run.frames(load, state)
    depth = frames["queue_depth"]
    # The gap is when the work queue could not be read: the broker was away.
    gap = depth[depth["queue"] == topo.QUEUE_ORDER_PLACED] if "queue" in depth else depth
    gap_t = gap[gap["ready"].isna()]["t"] if "ready" in gap else pd.Series(dtype=float)
    summary = ReconnectSummary(
        **run.base_summary(load, state, verdict, frames["latency"]), outage=how,
        gap_s=round(float(gap_t.max() - gap_t.min()), 2) if len(gap_t) else 0.0,
        services_restarted=not same_pids, reconnects=reconnects,
        refused_503_then_retried=int((load["attempts"] > 1).sum()),
        orders_refused_finally=int((~load["accepted"]).sum()),
        held_orders=len(held.accepted), held_outcomes_waited=len(held.waited),
        held_skipped=held.skipped)
    result = ScenarioResult("reconnect", summary, verdict, frames)
    result.figures = {
        "throughput": plots.throughput_chart(
            load, frames["latency"], run.timeline.frame(),
            title="Broker restart: the flow stops, the services reconnect, it resumes"),
        "http": plots.http_chart(load, run.timeline.frame()),
    }
    tried = (f"streamed {orders} orders at {rate:g}/s and {how}ed the broker after "
             f"{outage_after_s:g} s, then started it again (refused orders were retried); "
             + held.tried())
    result.checks = [
        Check("reconnect", "services reconnect by themselves", tried,
              "every service process survives the outage and is healthy again",
              "every service reconnected on its own" if not gone and same_pids else
              f"{', '.join(gone) or 'a service'} did not come back by itself after the broker "
              "restart: catch the connection error and connect again (with a backoff)",
              not gone and same_pids, {"unhealthy": gone}, "throughput"),
        *invariant_checks("reconnect", tried, verdict, chart="throughput", hints={
            "lost": "{n} orders answered 201 were never notified across the broker restarts "
                    "({ids}): were they published without publisher confirms or as "
                    "transient messages, or acked before their outcome was confirmed?"},
            only=("lost", "duplicate_notifications", "double_reservations", "stock_conserved")),
    ]
    return finish(run, result)


register(Scenario("reconnect", reconnect, black_box=True, needs_restartable_broker=True,
                  ci_kwargs={"orders": 40, "rate": 20.0, "outage_after_s": 1.0,
                             "held_orders": 6}, rank=60,
                  summary="a broker restart mid-stream, then one while outcomes wait in "
                          "their queues (the notification service stopped)"))
