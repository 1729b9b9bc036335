"""Malformed messages: each goes to the DLQ with a reason, and consuming goes on (black-box)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from harness.amqp import H_REASON
from harness.faults import MALFORMED
from harness.invariants import Check, invariant_checks
from harness.lab import LabConfig
from harness.lab.impl import Impl
from harness.load import LoadSpec
from harness.reporting import plots
from harness.reporting.results import ScenarioResult
from harness.runner import Run
from harness.scenarios.common import PLENTY, broker_for, finish, judge
from harness.scenarios.loops import loop_check
from harness.scenarios.registry import Scenario, register
from harness.scenarios.summary import MalformedSummary
from harness.waiting import WaitTimeout
from lab_services import topology as topo


def malformed(broker: Any = None, *, orders: int = 20, each: int = 1,
              out: str | Path = "runs", progress: bool = True,
              impl: Impl | str | Path | None = None, **lab: Any) -> ScenarioResult:
    """Publish every kind of malformed OrderPlaced, then valid orders: the bad ones must land
    in the DLQ with a reason, and the valid ones behind them must still be notified."""
    cfg = LabConfig(initial_stock=PLENTY, **lab)
    with broker_for(broker) as b, Run("malformed", b, out=out, lab=cfg, impl=impl,
                                      progress=progress) as run:
        injected = 0
        run.wait_declared(topo.ORDER_EVENTS, exchange=True)  # what the injections publish to
        for kind in MALFORMED:
            for _ in range(each):
                run.faults.malformed(kind)
                injected += 1
        load = run.place(LoadSpec(orders=orders, seed=23,
                                  description="valid orders behind the malformed ones"))
        accepted = load.loc[load["accepted"], "order_id"].tolist()
        run.wait_notified(accepted, timeout=20 + orders / 5)
        # Fewer dead letters than malformed messages is judged below, not an error here.
        with contextlib.suppress(WaitTimeout):
            run.wait_depth(topo.DLQ, lambda n: n >= injected, 10,
                           f"{injected} messages in the DLQ")
        state = run.collect()
        verdict = judge(run, state, accepted, malformed_injected=injected)
        frames = run.frames(load, state)
        notified = verdict.counts["notified"]
        no_reason = [m for m in state.dlq if not (m["headers"] or {}).get(H_REASON)]
        summary = MalformedSummary(
            **run.base_summary(load, state, verdict, frames["latency"]),
            malformed_injected=injected, malformed_in_dlq=verdict.counts["malformed_in_dlq"],
            without_reason=len(no_reason), orders_after_malformed=len(accepted),
            notified_after_malformed=notified,
            dlq_reasons=sorted({str(m["reason"]) for m in state.dlq}))
        frames["dlq"]["body"] = frames["dlq"]["body"].str.slice(0, 200)
        result = ScenarioResult("malformed", summary, verdict, frames)
        result.figures = {
            "queue_depth": plots.depth_chart(
                frames["queue_depth"], run.timeline.frame(),
                queues=(topo.QUEUE_ORDER_PLACED, topo.DLQ),
                title="Malformed messages step into the DLQ; valid orders flow on"),
        }
        kinds = ", ".join(MALFORMED)
        tried = (f"published {injected} malformed OrderPlaced messages ({kinds}) to "
                 f"{topo.ORDER_EVENTS}, then placed {orders} valid orders")
        found = verdict.counts["malformed_in_dlq"]
        lost = verdict.evidence.get("lost", [])
        result.checks = [
            Check("malformed", "consuming goes on after a malformed message", tried,
                  "every valid order placed after the malformed ones is notified",
                  f"all {len(accepted)} valid orders behind them were notified" if not lost else
                  f"the inventory stopped consuming after a malformed message: {len(lost)} of "
                  f"{len(accepted)} valid orders placed after it were never notified (e.g. "
                  f"{lost[0]}); catch the parse error, dead-letter that one message and go on",
                  not lost, {"order_ids": lost[:20]}, "queue_depth"),
            Check("malformed", "malformed messages dead-lettered", tried,
                  f"exactly the {injected} malformed messages in {topo.DLQ}",
                  f"all {injected} reached {topo.DLQ}" if found == injected else
                  f"{topo.DLQ} holds {found} of the {injected} malformed messages: reject a "
                  "message you cannot parse without requeueing it (it then goes through "
                  f"{topo.DEAD_LETTERS}), never drop or requeue it for ever",
                  found == injected, {"injected": injected, "in_dlq": found,
                                      "dlq_messages": len(state.dlq)}, "queue_depth"),
            Check("malformed", "dead letters say why", tried,
                  f"each dead letter carries an {H_REASON} header naming the problem",
                  "every dead letter names its reason" if state.dlq and not no_reason else
                  ("the DLQ is empty, so no reason could be read" if not state.dlq else
                   f"{len(no_reason)} of {len(state.dlq)} dead letters carry no {H_REASON} "
                   "header (only the broker's x-death 'rejected'): whoever reads the DLQ "
                   "cannot tell what was wrong; republish to dead_letters with the reason"),
                  bool(state.dlq) and not no_reason,
                  {"without_reason": len(no_reason),
                   "reasons": sorted({str(m["reason"]) for m in state.dlq})[:10]}),
            *invariant_checks("malformed", tried, verdict,
                              only=("valid_in_dlq", "double_reservations", "stock_conserved")),
            loop_check("malformed", tried, run),
        ]
        return finish(run, result)


register(Scenario("malformed", malformed, black_box=True,
                  ci_kwargs={"orders": 10},
                  rank=90,
                  summary="malformed messages to the DLQ with a reason; consuming goes on"))
