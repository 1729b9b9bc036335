"""The chaos scenario: a seeded fault schedule against real clients, judged by a checker
that can say no.

    python -m harness run chaos --seed 1 --orders 2000 --rate 100

Clients place orders with an Idempotency-Key and retry as real ones do, while a schedule
drawn from the seed kills services and the broker, raises a memory alarm, republishes
every order of a storm twice, floods order.placed with hostile messages and injects a poison
order (one whose handling always fails: on the lab, an order its inventory crashes on every
time; on any other implementation, an order with a quantity of 2**63). When the faults are
over and the queues have had their time to drain, `chaos_check` judges what the clients saw
against what the services hold.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import requests

from harness import amqp
from harness.brokers import management as admin
from harness.chaos.check import JUDGED, ChaosObservation, ClientRequest, check_chaos
from harness.chaos.inject import FaultRunner, Injector
from harness.chaos.messages import KINDS, VIA_MANAGEMENT, tag, tag_of
from harness.chaos.plots import depth_per_queue, latency_over_time, mark_chaos, outcome_table
from harness.chaos.schedule import (
    CRASH,
    HOSTILE,
    ScheduleSpec,
    draw_schedule,
    flood_messages,
    poison_order_id,
    poison_orders,
    write_schedule,
)
from harness.invariants import Check, Verdict, dlq_order_id, invariant_checks
from harness.lab import LabConfig
from harness.lab.deadline import DeadlineSession
from harness.lab.impl import Impl, resolve
from harness.load import LoadSpec, place_orders
from harness.observe import LAB_QUEUES
from harness.reporting import plots
from harness.reporting.results import ScenarioResult
from harness.runner import Run
from harness.scenarios.common import broker_for
from harness.scenarios.loops import redelivery_window
from harness.scenarios.registry import Scenario, register
from harness.waiting import WaitTimeout, wait_until
from lab_services import topology as topo

log = logging.getLogger(__name__)

QUIET_S = 3.0
STUCK_S = 5.0  # no queue moved for this long with a service dead: nothing more will


# ---- settling and gathering ----------------------------------------------------------------


def _queue_messages(run: Run) -> dict[str, int]:
    """Messages (ready + unacked) in each of the lab's queues except the DLQ."""
    if getattr(run.broker, "management_url", None):
        rows = admin.queues(run.broker, run.lab.vhost or "/")
        return {q["name"]: int(q.get("messages") or 0) for q in rows
                if q["name"] != topo.DLQ and topo.owner_of(q["name"])}
    return {q: amqp.depth(run.lab.amqp_url, q) for q in LAB_QUEUES if q != topo.DLQ}


def _settle(run: Run, accepted: list[str], bound_s: float) -> dict[str, int]:
    """Wait for every service's health, every accepted order's notification and empty
    queues, all within one bound; return what the queues still hold."""
    deadline = time.monotonic() + bound_s

    def remaining() -> float:
        return max(1.0, deadline - time.monotonic())

    for name, svc in run.lab.services.items():
        try:
            svc.wait_healthy(remaining())
        except (WaitTimeout, RuntimeError) as exc:
            log.warning("%s not healthy after the faults: %s", name, exc)
    run.wait_notified(accepted, timeout=remaining())
    left: dict[str, int] = {}
    quiet_since: list[float] = []
    stuck: list[Any] = [None, 0.0]  # the depths last seen with a service dead, and since when

    def drained() -> bool:
        try:
            left.clear()
            left.update(_queue_messages(run))
        except Exception as exc:  # a sample missed is not a verdict; try again
            log.debug("queue sample failed: %s", exc)
            return False
        if any(left.values()):
            quiet_since.clear()
            dead = [n for n, svc in run.lab.services.items() if not svc.running]
            if not dead:
                return False
            # A dead consumer drains nothing more (nothing restarts it now): wait only
            # while the live ones still move messages, then take the queues as they are.
            now = time.monotonic()
            if left != stuck[0]:
                stuck[:] = [dict(left), now]
                return False
            if now - stuck[1] < STUCK_S:
                return False
            log.warning("%s died; the queues stopped moving at %s", ", ".join(dead), left)
            return True
        quiet_since[:] = quiet_since or [time.monotonic()]
        # The management figures trail the truth by about a second, and a message moving
        # between a retry tier and its queue shows in neither for a moment: only zeros
        # seen for QUIET_S in a row count as drained.
        return time.monotonic() - quiet_since[0] >= QUIET_S

    try:
        wait_until(drained, remaining() + QUIET_S, "every lab queue back to 0", interval=0.5)
    except WaitTimeout as exc:
        log.warning("%s: %s", exc, left)
    return dict(left)


def _lookups(url: str, order_ids: list[str]) -> dict[str, int | dict[str, Any]]:
    """GET /order/<id> for each order: the body when 200, else the status (None: no answer)."""
    found: dict[str, int | dict[str, Any]] = {}
    with DeadlineSession() as http:
        for oid in order_ids:
            try:
                r = http.get(f"{url}/order/{oid}", timeout=10)
                found[oid] = r.json() if r.status_code == 200 else r.status_code
            except (requests.RequestException, ValueError):
                found[oid] = -1
    return found


def _requests_of(load: pd.DataFrame) -> list[ClientRequest]:
    rows = []
    for r in load.itertuples():
        statuses = [None if s == "-" else int(s) for s in str(r.statuses).split()]
        rows.append(ClientRequest(r.idempotency_key, r.user_id, r.items, statuses,
                                  str(r.order_ids).split() if r.order_ids else []))
    return rows


def _safe_health(run: Run) -> dict[str, dict[str, Any] | None]:
    out = {}
    for name, svc in run.lab.services.items():
        try:
            out[name] = svc.health()
        except Exception:  # a garbled /health is as good as none
            out[name] = None
    return out


# ---- charts --------------------------------------------------------------------------------

# ---- the scenario --------------------------------------------------------------------------


def _status_consumers(run: Any) -> int | None:
    """Consumers of order_status now; None when that cannot be read."""
    try:
        return amqp.consumers(run.lab.amqp_url, topo.QUEUE_ORDER_STATUS)
    except Exception:  # an unreachable broker: unknown, not a finding
        return None


def chaos(broker: Any = None, *, seed: int = 1, orders: int = 300, rate: float = 30.0,
          concurrency: int = 16, kills_per_service: int = 2, retry_for_s: float = 90.0,
          settle_s: float = 60.0, fault_mix: dict[str, Any] | None = None,
          poison: int = 1, poison_kind: str | None = None,
          prepare: Callable[[Run], None] | None = None,
          out: str | Path = "runs", progress: bool = True,
          impl: Impl | str | Path | None = None,
          lab: LabConfig | None = None, **lab_overrides: Any) -> ScenarioResult:
    """Place orders through a seeded fault schedule and judge the run (see the module doc).

    The defaults are CI-sized; the command line runs 2,000 orders at 100/s. `fault_mix`
    overrides ScheduleSpec fields (e.g. {"storms": 0}); `lab` (or keyword overrides of
    LabConfig) picks the lab's design, and `prepare(run)` may change the running lab before
    the load starts (e.g. remove a binding), to show that a broken system is caught.
    `poison` orders are injected; `poison_kind` is "crash" (the lab's inventory crashes on
    it, white-box: the default when every service is the lab's own) or "hostile" (any
    implementation: the default otherwise).
    """
    window = orders / rate
    # An order takes 0.45 units of an item on average: stock of 0.4 per order runs out near
    # the end, so that some orders fail for want of stock, as in a real shop.
    cfg = lab or LabConfig(initial_stock=str(max(20, orders * 2 // 5)), **lab_overrides)
    kind = poison_kind or (CRASH if resolve(impl).is_lab else HOSTILE)
    if kind == CRASH and poison:
        # Only the lab's inventory knows LAB_CRASH_AT: it exits each time it handles these.
        ids = ",".join(poison_order_id(seed, i) for i in range(poison))
        cfg = dataclasses.replace(cfg, extra_env={**cfg.extra_env,
                                                  "LAB_CRASH_AT": f"before_commit:{ids}"})
    with broker_for(broker) as b, Run("chaos", b, out=out, lab=cfg, impl=impl,
                                      progress=progress) as run:
        can_stop = bool(getattr(b, "can_stop", True))
        drawn: dict[str, Any] = {
            "kills_per_service": kills_per_service,
            "broker_kills": 1 if can_stop else 0,
            "memory_alarms": 1 if hasattr(b, "rabbitmqctl") else 0,
            "broker_faults": can_stop,
            "kinds": KINDS if getattr(b, "management_url", None)
            else tuple(k for k in KINDS if k not in VIA_MANAGEMENT),
            "poisons": poison, "poison_kind": kind,
            **(fault_mix or {}),
        }
        spec = ScheduleSpec(seed=seed, window_s=window, orders=orders, **drawn)
        schedule = draw_schedule(spec)
        write_schedule(schedule, run.run_dir)
        if prepare is not None:
            prepare(run)
        malformed = {tag(n) for n, _kind in flood_messages(schedule)}
        injector = Injector(run.lab.amqp_url, run.timeline, b, run.lab.vhost).start()
        faults = FaultRunner(run, schedule, injector)
        load_spec = LoadSpec(orders=orders, rate=rate, concurrency=concurrency, seed=seed,
                             idempotency_key=True, unique_users=True, confirm_accepted=True,
                             retry_unavailable_for=retry_for_s, user_prefix="chaos",
                             progress=progress, description=f"chaos seed {seed}")
        poisoned = poison_orders(schedule)
        faults.start()
        try:
            try:
                load = place_orders(run.lab.url("order"), load_spec, t0=run.t0,
                                    on_accepted=injector.on_accepted)
                faults.join(timeout=120 + (schedule[-1].at_s if schedule else 0))
            finally:
                injector.finish(timeout=120)
                if not faults.done.is_set():
                    faults.join(timeout=120)
                faults.restore()
            last_fault_t = run.timeline.now()
            run.timeline.record("last fault", "-", "settling")
            accepted = [o for ids in load["order_ids"] for o in str(ids).split()]
            if faults.supervise:
                # The inventory crashes at each delivery of the poison until its delivery
                # limit dead-letters it: settle once that is over (bounded; judged below).
                with contextlib.suppress(WaitTimeout):
                    wait_until(lambda: set(poisoned) <= _dead_ids(run), settle_s,
                               "the poison orders in the DLQ", interval=0.5)
            left = _settle(run, accepted, settle_s)
        finally:
            faults.stop_supervising()  # never restart a service of a lab being torn down
        state = run.collect()
        lookups = _lookups(run.lab.url("order"), accepted)
        obs = ChaosObservation(
            requests=_requests_of(load), server_orders=state.orders, lookups=lookups,
            notifications=state.notifications, inventory=state.inventory,
            ledger=state.ledger, dlq=state.dlq, malformed_tags=malformed, queues_left=left,
            health=_safe_health(run), ledger_snapshots=run.faults.ledger_snapshots,
            facts={"timeline": list(run.timeline.rows), "died": dict(run.died)},
            poison=poisoned, redeliveries=redelivery_window(run),
            status_consumers=_status_consumers(run))
        verdict = check_chaos(obs)
        injection_errors = faults.errors + injector.errors
        if injection_errors:
            verdict = Verdict(False, {**verdict.counts, "faults_not_injected":
                                      len(injection_errors)},
                              [*verdict.problems, f"{len(injection_errors)} faults could not "
                               f"be injected: {injection_errors[:3]}"], verdict.evidence,
                              verdict.facts)
        frames = run.frames(load, state)
        frames["schedule"] = pd.DataFrame([f.to_row() for f in schedule])
        frames["dlq"]["tag"] = [tag_of(m) for m in state.dlq]
        frames["dlq"]["body"] = frames["dlq"]["body"].str.slice(0, 200)
        c = verdict.counts
        summary: dict[str, Any] = {
            "scenario": "chaos",
            "seed": seed,
            "broker": {"provider": getattr(b, "provider", "?")},
            "orders_requested": orders,
            "rate": rate,
            "lab": {"idempotency": cfg.idempotency, **cfg.extra_env},
            **{k: c[k] for k in ("accepted", "accepted_202", "retried", "notified",
                                 "reserved", "failed", "malformed_injected", "dlq_messages",
                                 "dlq_repeated")},
            **{k: c[k] for k in JUDGED if k in c},
            "reserved_twice": c["reserved_twice"],
            "reserved_twice_detail": {k: c[k] for k in (
                "double_reservations", "stock_conserved", "outcomes_vs_ledger")},
            "ghosts_detail": {"unaccepted": c["ghosts_unaccepted"], "404": c["ghosts_404"]},
            "answers": c["answers"],
            "poison": {"kind": kind, "orders": c["poison_orders"],
                       "dead_lettered": c["poison_dead_lettered"],
                       "crash_restarts": faults.crash_restarts},
            "faults_planned": dict(Counter(f"{f.action} {f.target}" for f in schedule)),
            "faults_injected": dict(Counter(
                f"{k} {t}" for k, t in zip(run.timeline.frame()["kind"],
                                           run.timeline.frame()["target"], strict=True))),
            "published": dict(injector.sent),
            "queues_left": left,
            "settled_after_last_fault_s": round(run.timeline.now() - last_fault_t, 2),
            "latency_ms": _pcts(frames["latency"]),
            "duration_s": round(run.timeline.now(), 2),
        }
        result = ScenarioResult("chaos", summary, verdict, frames)
        tried = (f"placed {orders} orders at {rate}/s with an Idempotency-Key through a fault "
                 f"schedule drawn from seed {seed} (kills, broker faults, duplicate storms, a "
                 f"malformed flood, {poison} {kind} poison order(s)), then let the queues "
                 "drain")
        result.checks = invariant_checks("chaos", tried, verdict, chart="outcome", only=JUDGED)
        if injection_errors:
            result.checks.append(Check("chaos", "faults injected", tried,
                                       "every scheduled fault is injected",
                                       f"{len(injection_errors)} faults could not be injected "
                                       f"by the harness: {injection_errors[:3]}", None,
                                       {"errors": injection_errors[:10]}))
        timeline = run.timeline.frame()
        result.figures = {
            "queue_depth": depth_per_queue(frames["queue_depth"], timeline, seed),
            "throughput": plots.throughput_chart(
                load, frames["latency"], None,
                title="Orders accepted (201/202) and notified per second, faults shaded"),
            "latency": latency_over_time(frames["latency"], timeline),
            "outcome": outcome_table(verdict, timeline),
        }
        mark_chaos(result.figures["throughput"].axes[0], timeline)
        result.timeline = timeline
        result.write(run.run_dir)
        log.info("%s", result.text())
        return result


def _dead_ids(run: Run) -> set[str | None]:
    """The order ids of the dead letters that carry a reason (a read error: none yet)."""
    try:
        return {dlq_order_id(m) for m in amqp.read_queue(run.lab.amqp_url) if m.get("reason")}
    except Exception as exc:  # the broker may be busy; the wait tries again
        log.debug("reading the DLQ: %s", exc)
        return set()


def _pcts(latency: pd.DataFrame) -> dict[str, float | None]:
    if latency.empty:
        return {}
    s = latency["end_to_end_ms"].dropna()
    return {p: (round(float(np.percentile(s, q)), 1) if len(s) else None)
            for p, q in (("p50", 50), ("p99", 99), ("max", 100))}


register(Scenario("chaos", chaos, black_box=True, needs_restartable_broker=True, rank=100,
                  ci_kwargs={"orders": 200, "rate": 30.0},
                  full_kwargs={"orders": 2000, "rate": 100.0, "kills_per_service": 3},
                  summary="a seeded fault schedule: kills, a broker restart, a memory alarm, "
                          "duplicate storms and a malformed flood; nothing lost, doubled or "
                          "stuck"))
