"""Backlog drain: stop the inventory, let a backlog build, restart it, watch it drain."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from harness.invariants import invariant_checks
from harness.lab import LabConfig
from harness.lab.impl import Impl
from harness.load import LoadSpec
from harness.observe import latency_frame, percentiles
from harness.reporting import plots
from harness.reporting.results import ScenarioResult
from harness.runner import Run
from harness.scenarios.common import PLENTY, accepted_ids, broker_for, finish, judge
from harness.scenarios.registry import Scenario, register
from harness.scenarios.summary import DrainSummary
from lab_services import events
from lab_services import topology as topo


def backlog_decisions(notifications: list[dict[str, Any]],
                      backlog_ids: set[str]) -> list[pd.Timestamp] | None:
    """When the consumer decided each backlog order (its outcome timestamps), in order.

    None when there is nothing to read: no notification with per-hop timestamps, or an
    implementation that does not report when it decided.
    """
    if latency_frame(notifications).empty:
        return None
    stamps = [n.get("outcome_timestamp") for n in notifications if n["order_id"] in backlog_ids]
    if not all(stamps):  # an implementation that does not report when it decided
        return None
    try:  # each on its own: another implementation may drop zero microseconds, say
        return sorted(pd.Timestamp(events.parse_timestamp(t)) for t in stamps)
    except (TypeError, ValueError, AttributeError):
        return None


def first_decisions(decided: list[pd.Timestamp] | None,
                    restart_at_wall: pd.Timestamp | None) -> dict[str, Any]:
    """Seconds from the restart to the first decision, and how many decisions there were.

    With `drain_stats`' first-to-last rate they add up: time to empty = first_decision_s +
    (decisions - 1) / drain_rate_msg_s. A consumer that decides a burst at a time (the
    lab's inventory) stamps the burst's decisions together, so the first ones come after
    its start-up *and* the first burst's work.
    """
    if not decided or restart_at_wall is None:
        return {"first_decision_s": None, "decisions": len(decided or [])}
    return {"first_decision_s": round((decided[0] - restart_at_wall).total_seconds(), 2),
            "decisions": len(decided)}


def drain_stats(notifications: list[dict[str, Any]], backlog_ids: set[str],
                restart_at_wall: pd.Timestamp | None, *,
                rate_from: str = "first") -> dict[str, Any]:
    """Drain rate and time to empty, from the inventory's own outcome timestamps.

    `rate_from="first"` measures the rate from the first outcome to the last (how fast the
    consumer decides once it is going); `"release"` divides the whole backlog by the time
    to empty. The second is the fair one when consumers decide a burst at a time: the
    first clump's work happens before the first outcome, so "first" leaves it out (with
    4 consumers at prefetch 50 and a 200-order backlog, nearly all of it).
    """
    if rate_from not in ("first", "release"):
        raise ValueError(f"rate_from must be 'first' or 'release', not {rate_from!r}")
    none = {"drain_rate_msg_s": None, "time_to_empty_s": None}
    decided = backlog_decisions(notifications, backlog_ids)
    if decided is None or len(decided) < 2:
        return none
    backlog = [n for n in notifications if n["order_id"] in backlog_ids]
    to_empty = (decided[-1] - restart_at_wall).total_seconds() if restart_at_wall else None
    if rate_from == "release":
        finished = {n["order_id"] for n in backlog}  # (a redelivery notifies twice)
        rate = len(finished) / to_empty if to_empty else None
    else:
        span = (decided[-1] - decided[0]).total_seconds()
        rate = (len(decided) - 1) / span if span > 0 else None
    return {"drain_rate_msg_s": round(rate, 1) if rate else None,
            "time_to_empty_s": round(to_empty, 2) if to_empty is not None else None}


def backlog_drain(broker: Any = None, *, orders: int = 500, rate: float = 250.0,
                  work_ms: float = 2.0, hold_s: float = 1.0, prefetch: int = 50,
                  seed: int = 7, out: str | Path = "runs", progress: bool = True,
                  impl: Impl | str | Path | None = None, **lab: Any) -> ScenarioResult:
    """Stop the inventory, let a backlog build, restart it and watch the backlog drain.

    `work_ms` is the lab's inventory's simulated work per order: it sets the service rate,
    so that the drain is slow enough to see (0 shows the raw speed of the pipeline). Other
    implementations ignore it and `prefetch`.
    """
    lab_cfg = LabConfig(prefetch=prefetch, initial_stock=PLENTY,
                        extra_env={"WORK_MS": str(work_ms)}, **lab)
    with broker_for(broker) as b, Run("backlog-drain", b, out=out, lab=lab_cfg, impl=impl,
                                      progress=progress) as run:
        run.faults.stop_service("inventory")
        load = run.place(LoadSpec(orders=orders, rate=rate, concurrency=8, seed=seed,
                                  description="building the backlog"))
        accepted = load.loc[load["accepted"], "order_id"].tolist()
        backlog = run.wait_depth(topo.QUEUE_ORDER_PLACED, lambda n: n >= len(accepted), 30,
                                 f"{len(accepted)} orders waiting in {topo.QUEUE_ORDER_PLACED}")
        run.timeline.record("hold", topo.QUEUE_ORDER_PLACED, f"backlog of {backlog}")
        # The plateau is part of the picture: the backlog waits, nothing is lost.
        run.hold(hold_s)
        restart_wall = pd.Timestamp.now(tz="UTC")
        restart_t = run.timeline.now()
        run.faults.start_service("inventory")
        run.wait_notified(accepted, timeout=60 + orders * (work_ms / 1000 + 0.01))
        run.wait_depth(topo.QUEUE_ORDER_PLACED, lambda n: n == 0, 10, "order_placed empty")
        run.hold(0.5)  # a few more samples, so the chart shows the queue at rest
        state = run.collect()
        verdict = judge(run, state, accepted_ids(load))
        frames = run.frames(load, state)
        drained = drain_stats(state.notifications, set(accepted), restart_wall)
        first = first_decisions(backlog_decisions(state.notifications, set(accepted)),
                                restart_wall)
        lat = frames["latency"]
        summary = DrainSummary(
            **run.base_summary(load, state, verdict, lat), backlog_peak=int(backlog),
            arrival_rate_msg_s=rate, work_ms=work_ms, prefetch=prefetch, **drained, **first,
            latency_backlog_ms=percentiles(lat["end_to_end_ms"]) if not lat.empty else {})
        result = ScenarioResult("backlog-drain", summary, verdict, frames)
        end = restart_t + drained["time_to_empty_s"] if drained["time_to_empty_s"] else None
        result.figures = {
            "queue_depth": plots.depth_chart(
                frames["queue_depth"], run.timeline.frame(), queues=(topo.QUEUE_ORDER_PLACED,),
                title="The backlog builds while inventory is down, and drains when it returns"),
            "drain": plots.drain_chart(frames["queue_depth"], topo.QUEUE_ORDER_PLACED, restart_t,
                                       end, drained["drain_rate_msg_s"], run.timeline.frame(),
                                       first_s=first["first_decision_s"],
                                       decisions=first["decisions"]),
            "latency_cdf": plots.latency_cdf(
                lat, title="Backlog orders wait in the queue: latency is mostly queueing"),
        }
        tried = (f"stopped the inventory, placed {orders} orders (a backlog of {backlog} in "
                 f"{topo.QUEUE_ORDER_PLACED}), then started it again")
        result.checks = invariant_checks("backlog-drain", tried, verdict, chart="drain", hints={
            "lost": "{n} orders placed while the inventory was down were never notified "
                    "after it came back ({ids}): did the inventory consume the backlog that "
                    "waited in order_placed?"},
            only=("lost", "duplicate_notifications", "double_reservations", "stock_conserved"))
        return finish(run, result)


register(Scenario("backlog-drain", backlog_drain, black_box=True,
                  ci_kwargs={"orders": 30, "hold_s": 0.3},
                  rank=20,
                  summary="a backlog builds while the inventory is down, then drains"))
