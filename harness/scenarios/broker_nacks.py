"""Broker nacks: the broker refuses the inventory's outcomes for a while (black-box).

A policy (`max-length 0`, `overflow reject-publish`) on `inventory_reserved` makes the broker
nack every InventoryReserved published while it is set. An inventory that waits for its
confirms and acks its input only once they say yes publishes the outcome again, and the
order is notified once the policy is lifted; one that ignores nacks (or publishes without
confirms) has acked an order whose outcome was dropped: lost.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.brokers import management
from harness.invariants import Check, invariant_checks
from harness.lab import LabConfig
from harness.lab.impl import Impl
from harness.load import LoadSpec
from harness.reporting import plots
from harness.reporting.results import ScenarioResult
from harness.runner import Run
from harness.scenarios.common import PLENTY, accepted_ids, broker_for, finish, judge
from harness.scenarios.registry import Scenario, register
from harness.scenarios.summary import RunSummary
from lab_services import topology as topo

NAME = "broker-nacks"
POLICY = "harness-reject-publish"


def broker_nacks(broker: Any = None, *, orders: int = 20, refuse_s: float = 1.5,
                 out: str | Path = "runs", progress: bool = True,
                 impl: Impl | str | Path | None = None, **lab: Any) -> ScenarioResult:
    """Place orders while the broker nacks every InventoryReserved for `refuse_s` seconds,
    then lift the refusal: every accepted order must still be notified, once.

    `refuse_s` stays short of the lab's own retry tiers (0.2 + 0.8 + 3.2 s): a correct
    service retrying a nacked publish must not run out of retries before the broker relents.
    """
    cfg = LabConfig(initial_stock=PLENTY, **lab)
    with broker_for(broker) as b, Run(NAME, b, out=out, lab=cfg, impl=impl,
                                      progress=progress) as run:
        vhost = run.lab.vhost or "/"
        tried = (f"set a policy (max-length 0, overflow reject-publish) on "
                 f"{topo.QUEUE_INVENTORY_RESERVED}, so that the broker nacks every "
                 f"InventoryReserved, placed {orders} orders, lifted it after {refuse_s} s")
        if not getattr(b, "management_url", None):
            return _skipped(run, tried, "the broker has no management API to set a policy")
        run.timeline.record("inject policy", topo.QUEUE_INVENTORY_RESERVED, "reject-publish")
        management.set_policy(b, vhost, POLICY, f"^{topo.QUEUE_INVENTORY_RESERVED}$",
                              {"max-length": 0, "overflow": "reject-publish"})
        try:
            load = run.place(LoadSpec(orders=orders, concurrency=4, seed=61,
                                      description="orders while the broker nacks"))
            run.hold(refuse_s)
        finally:
            management.clear_policy(b, vhost, POLICY)
            run.timeline.record("clear policy", topo.QUEUE_INVENTORY_RESERVED, "")
        accepted = accepted_ids(load)
        run.wait_notified(accepted, timeout=30 + orders / 5)
        state = run.collect()
        # Every order was placed while the policy held: a lost one the inventory reserved
        # had its outcome refused (the cause reads this, with the ledger).
        verdict = judge(run, state, accepted, more_facts={"publishes_refused": {
            "queue": topo.QUEUE_INVENTORY_RESERVED, "orders": accepted}})
        frames = run.frames(load, state)
        summary = RunSummary(**run.base_summary(load, state, verdict, frames["latency"]))
        result = ScenarioResult(NAME, summary, verdict, frames)
        result.figures = {"queue_depth": plots.depth_chart(
            frames["queue_depth"], run.timeline.frame(),
            title="The broker nacks InventoryReserved for a while: nothing may be lost")}
        result.checks = invariant_checks(NAME, tried, verdict, chart="queue_depth", hints={
            "lost": "{n} orders answered 201 were never notified after the broker nacked "
                    "their InventoryReserved ({ids}): wait for the confirm, and on a nack "
                    "publish again (or requeue the input) instead of acking it"},
            only=("lost", "duplicate_notifications", "double_reservations", "stock_conserved"))
        return finish(run, result)


def _skipped(run: Run, tried: str, why: str) -> ScenarioResult:
    from harness.invariants import Verdict
    result = ScenarioResult(NAME, {"scenario": NAME, "skipped": why}, Verdict(True, {}))
    result.checks = [Check(NAME, "(scenario)", tried, "-", f"skipped: {why}", None,
                           {"skipped": True})]
    result.write(run.run_dir)
    return result


register(Scenario(NAME, broker_nacks, black_box=True,
                  ci_kwargs={"orders": 8},
                  rank=75,
                  summary="the broker nacks the inventory's outcomes for a while; every "
                          "accepted order is still notified"))
