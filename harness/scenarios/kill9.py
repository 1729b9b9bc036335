"""kill -9 mid-stream: kill the inventory while it drains a backlog, restart it (black-box).

The kill lands while the inventory is busy: a backlog is built first (inventory stopped),
and the kill comes as soon as the restarted inventory has taken some of it. Whatever it
held then must be redelivered and handled once: nothing lost, nothing reserved twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from harness import amqp
from harness.invariants import invariant_checks
from harness.lab import LabConfig
from harness.lab.impl import Impl
from harness.load import LoadSpec
from harness.reporting import plots
from harness.reporting.results import ScenarioResult
from harness.runner import Run
from harness.scenarios.common import PLENTY, accepted_ids, broker_for, finish, judge
from harness.scenarios.registry import Scenario, register
from harness.scenarios.summary import KillSummary
from harness.waiting import WaitTimeout, wait_until
from lab_services import topology as topo


def kill9(broker: Any = None, *, orders: int = 60, kills: int = 3, work_ms: float = 2.0,
          out: str | Path = "runs", progress: bool = True,
          impl: Impl | str | Path | None = None, **lab: Any) -> ScenarioResult:
    """Kill -9 the inventory `kills` times, each while it drains a backlog of orders/kills.

    `work_ms` slows the lab's own inventory so that its drain lasts long enough to be hit;
    other implementations ignore it.
    """
    cfg = LabConfig(initial_stock=PLENTY, extra_env={"WORK_MS": str(work_ms)}, **lab)
    with broker_for(broker) as b, Run("kill-9", b, out=out, lab=cfg, impl=impl,
                                      progress=progress) as run:
        loads = []
        per_round = max(1, orders // kills)
        for k in range(kills):
            run.faults.stop_service("inventory")
            load = run.place(LoadSpec(orders=per_round, concurrency=8, seed=40 + k,
                                      progress=False, description=f"backlog {k + 1}"))
            loads.append(load)
            n = int(load["accepted"].sum())
            run.wait_depth(topo.QUEUE_ORDER_PLACED, lambda d, n=n: d >= n, 30,
                           f"{n} orders waiting in {topo.QUEUE_ORDER_PLACED}")
            # Not waiting for health: the kill must land while the backlog drains.
            run.timeline.record("start", "inventory", "into the backlog")
            run.lab.start_service("inventory", wait=False)
            _kill_once_busy(run, n)
            run.lab.start_service("inventory")
            run.timeline.record("start", "inventory", "after kill -9")
        load = pd.concat(loads, ignore_index=True)
        accepted = load.loc[load["accepted"], "order_id"].tolist()
        # The backlog drains in moments after the last restart; a lost order never arrives.
        run.wait_notified(accepted, timeout=10 + orders / 5)
        state = run.collect()
        verdict = judge(run, state, accepted_ids(load))
        frames = run.frames(load, state)
        summary = KillSummary(**run.base_summary(load, state, verdict, frames["latency"]),
                              killed="inventory", kills=kills)
        result = ScenarioResult("kill-9", summary, verdict, frames)
        result.figures = {
            "queue_depth": plots.depth_chart(
                frames["queue_depth"], run.timeline.frame(), queues=(topo.QUEUE_ORDER_PLACED,),
                title="kill -9 of the inventory while it drains: the backlog must survive"),
        }
        tried = (f"{kills} times: stopped the inventory, queued {per_round} orders, started it "
                 "and killed it with SIGKILL while it was draining them, then started it again")
        result.checks = invariant_checks("kill-9", tried, verdict, chart="queue_depth", hints={
            "lost": "{n} orders answered 201 were never notified after kill -9 of inventory "
                    "({ids}): did you ack before the work was done?",
            "double_reservations": "{n} orders were reserved twice after kill -9 of the "
                                   "inventory ({ids}): a redelivered order must not be reserved "
                                   "again; record it as processed in the same transaction as "
                                   "the reservation"},
            only=("lost", "double_reservations", "duplicate_notifications", "stock_conserved"))
        return finish(run, result)


def _kill_once_busy(run: Run, backlog: int) -> None:
    """SIGKILL the inventory once it has taken at least two messages of the backlog.

    Two, not one: the first delivery can reach a consumer that is still starting up, and
    a kill before its first ack would test nothing. A second delivery shows that the
    consumer has settled the first one (with prefetch 1) or taken a batch: it is working.
    """
    taken = min(2, backlog)

    # One channel polled fast (a passive declare is about 0.3 ms): the kill should follow
    # the second delivery within a millisecond or two, while the first is being handled.
    with amqp.channel(run.lab.amqp_url, confirm=False) as ch:
        def busy():
            depth = ch.queue_declare(topo.QUEUE_ORDER_PLACED, passive=True).method.message_count
            return depth <= backlog - taken or None
        try:
            wait_until(busy, 10, "the inventory taking from the backlog", interval=0.001,
                       max_interval=0.002)
        except WaitTimeout:
            run.timeline.record("note", "inventory", "did not take from the backlog in 10 s")
        run.faults.kill_service("inventory")


register(Scenario("kill-9", kill9, black_box=True,
                  ci_kwargs={"orders": 21},
                  rank=95,
                  summary="kill -9 of the inventory while it drains a backlog"))
