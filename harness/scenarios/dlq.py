"""Malformed messages and poison orders to the DLQ (white-box: uses the poison user)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from harness.faults import MALFORMED
from harness.lab import LabConfig
from harness.lab.impl import Impl, resolve
from harness.load import LoadSpec
from harness.reporting import plots
from harness.reporting.results import ScenarioResult
from harness.runner import Run
from harness.scenarios.common import PLENTY, POISON_USER, broker_for, finish, judge
from harness.scenarios.registry import Scenario, register, require_lab
from harness.scenarios.summary import DlqSummary
from lab_services import topology as topo


def dlq(broker: Any = None, *, orders: int = 40, malformed_each: int = 2, poison: int = 2,
        out: str | Path = "runs", progress: bool = True, impl: Impl | str | Path | None = None,
        **lab: Any) -> ScenarioResult:
    """Mix malformed messages and poison orders into valid ones: the DLQ receives exactly
    the bad ones with their reasons, poison after bounded retries; valid orders flow on."""
    require_lab(resolve(impl), "dlq")
    cfg = LabConfig(initial_stock=PLENTY, extra_env={"LAB_FAIL_USER": POISON_USER}, **lab)
    with broker_for(broker) as b, Run("dlq", b, out=out, lab=cfg, progress=progress) as run:
        injected = 0
        half = run.place(LoadSpec(orders=orders // 2, seed=21, description="valid orders"))
        run.wait_declared(topo.ORDER_EVENTS, exchange=True)  # what the injections publish to
        for kind in MALFORMED:
            for _ in range(malformed_each):
                run.faults.malformed(kind)
                injected += 1
        poison_ids = []
        for _ in range(poison):
            r = run.lab.place_order(POISON_USER, [{"item_id": "item_1", "quantity": 1,
                                                   "price": 10}])
            r.raise_for_status()
            poison_ids.append(r.json()["order_id"])
            run.timeline.record("inject poison", r.json()["order_id"], "handler always fails")
        rest = run.place(LoadSpec(orders=orders - orders // 2, seed=22,
                                  description="valid orders"))
        load = pd.concat([half, rest], ignore_index=True)
        accepted = load.loc[load["accepted"], "order_id"].tolist()
        run.wait_notified(accepted, timeout=60)
        expected_dlq = injected + len(poison_ids)
        total_retry_s = sum(topo.RETRY_DELAYS_MS) / 1000
        run.wait_depth(topo.DLQ, lambda n: n >= expected_dlq, 20 + 2 * total_retry_s,
                       f"{expected_dlq} messages in the DLQ")
        run.hold(0.75)  # a few more samples, so the chart's DLQ line reaches the final count
        state = run.collect()
        verdict = judge(run, state, accepted + poison_ids, malformed_injected=injected,
                        expected_dead=set(poison_ids))
        frames = run.frames(load, state)
        base = {**run.base_summary(load, state, verdict, frames["latency"]),
                "orders_placed": verdict.counts["orders_placed"]}
        poison_attempts = [m["attempts"] for m in state.dlq
                           if m["reason"] and m["reason"].startswith("handler failed")]
        summary = DlqSummary(
            **base, malformed_injected=injected,
            malformed_in_dlq=verdict.counts["malformed_in_dlq"], poison_orders=len(poison_ids),
            poison_attempts=poison_attempts, dlq_reasons=sorted({m["reason"] for m in state.dlq}))
        frames["dlq"]["body"] = frames["dlq"]["body"].str.slice(0, 200)
        result = ScenarioResult("dlq", summary, verdict, frames)
        result.figures = {
            "queue_depth": plots.depth_chart(
                frames["queue_depth"], run.timeline.frame(),
                queues=(topo.QUEUE_ORDER_PLACED,
                        *(topo.retry_queue(n) for n in range(1, len(topo.RETRY_DELAYS_MS) + 1)),
                        topo.DLQ),
                title=f"{len(state.dlq)} messages in the DLQ ({injected} malformed at once, "
                      f"{len(poison_ids)} poison after retries); {len(accepted)} valid orders "
                      "served"),
        }
        return finish(run, result)


register(Scenario("dlq", dlq, black_box=False,
                  ci_kwargs={"orders": 20, "malformed_each": 1, "poison": 1},
                  rank=50,
                  summary="malformed and poison messages dead-lettered with reasons"))
