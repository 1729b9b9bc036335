"""Reconnect: restart the broker mid-stream; the services must reconnect by themselves."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from harness import amqp
from harness.grading.causes import ADVICE
from harness.invariants import Check, Verdict, invariant_checks
from harness.lab import LabConfig
from harness.lab.impl import Impl
from harness.load import LoadSpec
from harness.reporting import plots
from harness.reporting.results import ScenarioResult
from harness.runner import QUIET_S, STALL_S, Run
from harness.scenarios.common import PLENTY, broker_for, finish, judge
from harness.scenarios.held_outcomes import HeldOutcomes, hold_outcomes_through_restart
from harness.scenarios.registry import Scenario, register
from harness.scenarios.summary import ReconnectSummary
from harness.waiting import WaitTimeout, wait_until
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
    spec = LoadSpec(orders=orders, rate=rate, concurrency=8, seed=31,
                    retry_unavailable_for=60.0, description="orders through an outage")
    loader = run.place_in_background(spec)
    run.wait_depth(topo.QUEUE_ORDER_PLACED, lambda n: True, 5, "broker reachable")
    run.hold(outage_after_s)  # let the stream establish itself before the outage
    consumed = consumed_queues(run)
    if how == "kill":
        run.faults.kill_broker()
    else:
        run.faults.stop_broker()
    run.faults.start_broker()
    run.timeline.record("ready", "broker", "takes connections again")
    back_at = time.monotonic()
    unhealthy = []
    for name, svc in run.lab.services.items():
        try:
            svc.wait_healthy(60)
            run.timeline.record("healthy", name, "reconnected")
        except RuntimeError:  # ServiceFailed: it died, or never answered again
            unhealthy.append(name)
    load = loader.join()
    accepted = load.loc[load["accepted"], "order_id"].tolist()
    run.wait_notified(accepted, timeout=60)
    # Judged now: the step below restarts the notification service on purpose.
    same_pids = all(run.lab.services[n].proc.pid == p and run.lab.services[n].running
                    for n, p in pids.items())
    reconnects = {n: (svc.health() or {}).get("reconnects")
                  for n, svc in run.lab.services.items()}
    gone = [n for n in pids if n in unhealthy or not run.lab.services[n].running]
    # /health answering 200 is not a reconnect: a consumer whose thread died with the old
    # connection leaves its queue without a consumer while its service says ok.
    unconsumed = no_consumer_again(run, consumed, [n for n in pids if n not in gone],
                                   back_at + RECONSUME_S)
    held = HeldOutcomes(skipped="not asked for")
    if held_orders:
        held = hold_outcomes_through_restart(run, held_orders)
        # Each held order's outcome was seen in its queue before the restart: nothing of
        # them is kept outside the broker, so a quiet broker ends the wait (QUIET_S).
        run.wait_notified(held.accepted, timeout=10,
                          stall_s=STALL_S if held.skipped else QUIET_S)
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
        reconnect_check(tried, gone, same_pids, unconsumed),
        *invariant_checks("reconnect", tried, verdict, chart="throughput", hints={
            "lost": "{n} orders answered 201 were never notified across the broker restarts "
                    "({ids}): were they published without publisher confirms or as "
                    "transient messages, or acked before their outcome was confirmed?"},
            only=("lost", "duplicate_notifications", "double_reservations", "stock_conserved")),
    ]
    return finish(run, result)


# How long after the broker is back a service may take to consume again (its backoff).
RECONSUME_S = 15.0


def consumed_queues(run: Run) -> list[str]:
    """The contract's consumed queues that have a consumer now."""
    return [q for q in topo.QUEUE_OWNERS if amqp.consumers(run.lab.amqp_url, q)]


def no_consumer_again(run: Run, consumed: list[str], alive: list[str],
                      deadline: float) -> list[str]:
    """Of the queues consumed before the outage whose service is still up, those without a
    consumer after it, waited for until `deadline` (monotonic): a reconnect with backoff
    takes a moment, and the wait for the orders has usually given it that already."""
    wanted = [q for q in consumed if topo.owner_of(q) in alive]

    def missing() -> list[str]:
        return [q for q in wanted if not amqp.consumers(run.lab.amqp_url, q)]
    try:
        wait_until(lambda: not missing(), max(0.0, deadline - time.monotonic()),
                   "consumers back on their queues")
        return []
    except WaitTimeout:
        return missing()


def reconnect_check(tried: str, gone: list[str], same_pids: bool,
                    unconsumed: list[str]) -> Check:
    """The 'services reconnect by themselves' row: processes alive and healthy, and every
    queue consumed before the outage consumed again."""
    ok = not gone and same_pids and not unconsumed
    if ok:
        happened = ("every service reconnected on its own: each is healthy and each queue "
                    "consumed before the outage has a consumer again")
    elif gone or not same_pids:
        happened = (f"{', '.join(gone) or 'a service'} did not come back by itself after the "
                    "broker restart: catch the connection error and connect again (with a "
                    "backoff)")
    else:
        owners = sorted({topo.owner_of(q) or "?" for q in unconsumed})
        happened = (f"nothing consumes {', '.join(unconsumed)} since the broker restart, while "
                    f"the {' and '.join(owners)} service{'s' if len(owners) > 1 else ''} "
                    "answered /health with 200. Evidence: the broker counted a consumer on "
                    f"each before the outage and none after, {RECONSUME_S:.0f} s and more "
                    "after it took connections again (and after every order had been waited "
                    f"for). Likely cause: {ADVICE['consumer_gone']}")
    return Check("reconnect", "services reconnect by themselves", tried,
                 "every service process survives the outage, is healthy again and consumes "
                 "again", happened, ok, {"unhealthy": gone, "unconsumed": unconsumed},
                 "throughput", cause=None if ok or gone or not same_pids else "consumer_gone")


register(Scenario("reconnect", reconnect, black_box=True, needs_restartable_broker=True,
                  ci_kwargs={"orders": 40, "rate": 20.0, "outage_after_s": 1.0,
                             "held_orders": 6}, rank=60,
                  summary="a broker restart mid-stream, then one while outcomes wait in "
                          "their queues (the notification service stopped)"))
