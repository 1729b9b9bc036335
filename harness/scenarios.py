"""The lab's scenarios: each runs on a real broker, is observed, charted and judged.

Every scenario is a function `name(broker=None, *, orders=..., out="runs", ...)` that
returns a `ScenarioResult` and leaves a run folder; notebooks and the CLI call the same
functions. Without a broker, one is opened with `open_broker("auto")` and closed after.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from harness import plots
from harness.check import Verdict, check_run, double_reservations
from harness.faults import MALFORMED
from harness.lab import LabConfig
from harness.load import LoadSpec
from harness.observe import latency_frame, percentiles
from harness.report import ScenarioResult, combined_report, run_folder
from harness.runner import Run, order_event
from lab_services import topology as topo
from lab_services.crashpoints import CRASH_EXIT_CODE, POINTS

log = logging.getLogger(__name__)

POISON_USER = "poison-pill"
# Stock large enough that ordinary load never runs out: these scenarios are about
# messaging, and a sold-out item would only blur their counts.
PLENTY = "100000"


@contextlib.contextmanager
def _broker_for(broker: Any) -> Iterator[Any]:
    if broker is not None:
        yield broker
        return
    from harness.broker import open_broker
    with open_broker("auto") as opened:
        yield opened


def _finish(run: Run, result: ScenarioResult) -> ScenarioResult:
    result.timeline = run.timeline.frame()
    result.write(run.run_dir)
    log.info("%s", result.text())
    return result


# ---- baseline --------------------------------------------------------------------------


def baseline(broker: Any = None, *, orders: int = 200, rate: float | None = None,
             concurrency: int = 4, seed: int = 42, out: str | Path = "runs",
             progress: bool = True, **lab: Any) -> ScenarioResult:
    """Place N orders and follow each to its notification: the pipeline working normally."""
    with _broker_for(broker) as b, Run("baseline", b, out=out, progress=progress, **lab) as run:
        load = run.place(LoadSpec(orders=orders, rate=rate, concurrency=concurrency, seed=seed))
        accepted = load.loc[load["accepted"], "order_id"].tolist()
        run.wait_notified(accepted, timeout=30 + orders / 20)
        state = run.collect()
        verdict = run.judge(load, state)
        frames = run.frames(load, state)
        summary = run.base_summary(load, state, verdict, frames["latency"])
        result = ScenarioResult("baseline", summary, verdict, frames)
        result.figures = {
            "queue_depth": plots.depth_chart(frames["queue_depth"], run.timeline.frame(),
                                             title="Queue depth during the baseline run"),
            "latency_cdf": plots.latency_cdf(frames["latency"]),
        }
        return _finish(run, result)


# ---- backlog drain ---------------------------------------------------------------------


def drain_stats(notifications: list[dict[str, Any]], backlog_ids: set[str],
                restart_at_wall: pd.Timestamp | None) -> dict[str, Any]:
    """Drain rate and time to empty, from the inventory's own outcome timestamps."""
    lat = latency_frame(notifications)
    if lat.empty:
        return {"drain_rate_msg_s": None, "time_to_empty_s": None}
    decided = pd.to_datetime([n["outcome_timestamp"] for n in notifications
                              if n["order_id"] in backlog_ids], utc=True).sort_values()
    if len(decided) < 2:
        return {"drain_rate_msg_s": None, "time_to_empty_s": None}
    span = (decided[-1] - decided[0]).total_seconds()
    rate = (len(decided) - 1) / span if span > 0 else None
    to_empty = (decided[-1] - restart_at_wall).total_seconds() if restart_at_wall else None
    return {"drain_rate_msg_s": round(rate, 1) if rate else None,
            "time_to_empty_s": round(to_empty, 2) if to_empty is not None else None}


def backlog_drain(broker: Any = None, *, orders: int = 500, rate: float = 250.0,
                  work_ms: float = 2.0, hold_s: float = 1.0, prefetch: int = 50,
                  seed: int = 7, out: str | Path = "runs", progress: bool = True,
                  **lab: Any) -> ScenarioResult:
    """Stop the inventory, let a backlog build, restart it and watch the backlog drain.

    `work_ms` is the inventory's simulated work per order: it sets the service rate, so
    that the drain is slow enough to see (0 shows the raw speed of the pipeline).
    """
    lab_cfg = LabConfig(prefetch=prefetch, initial_stock=PLENTY,
                        extra_env={"WORK_MS": str(work_ms)}, **lab)
    with _broker_for(broker) as b, Run("backlog-drain", b, out=out, lab=lab_cfg,
                                       progress=progress) as run:
        run.faults.stop_service("inventory")
        load = run.place(LoadSpec(orders=orders, rate=rate, concurrency=8, seed=seed,
                                  description="building the backlog"))
        accepted = load.loc[load["accepted"], "order_id"].tolist()
        backlog = run.wait_depth(topo.ORDER_PLACED, lambda n: n >= len(accepted), 30,
                                 f"{len(accepted)} orders waiting in {topo.ORDER_PLACED}")
        run.timeline.record("hold", topo.ORDER_PLACED, f"backlog of {backlog}")
        # The plateau is part of the picture: the backlog waits, nothing is lost.
        run.hold(hold_s)
        restart_wall = pd.Timestamp.now(tz="UTC")
        restart_t = run.timeline.now()
        run.faults.start_service("inventory")
        run.wait_notified(accepted, timeout=60 + orders * (work_ms / 1000 + 0.01))
        run.wait_depth(topo.ORDER_PLACED, lambda n: n == 0, 10, "order_placed empty")
        run.hold(0.5)  # a few more samples, so the chart shows the queue at rest
        state = run.collect()
        verdict = run.judge(load, state)
        frames = run.frames(load, state)
        summary = run.base_summary(load, state, verdict, frames["latency"])
        drained = drain_stats(state.notifications, set(accepted), restart_wall)
        lat = frames["latency"]
        summary.update({
            "backlog_peak": int(backlog),
            "arrival_rate_msg_s": rate,
            "work_ms": work_ms,
            "prefetch": prefetch,
            **drained,
            "latency_backlog_ms": percentiles(lat["end_to_end_ms"]),
        })
        result = ScenarioResult("backlog-drain", summary, verdict, frames)
        end = restart_t + drained["time_to_empty_s"] if drained["time_to_empty_s"] else None
        result.figures = {
            "queue_depth": plots.depth_chart(
                frames["queue_depth"], run.timeline.frame(), queues=(topo.ORDER_PLACED,),
                title="The backlog builds while inventory is down, and drains when it returns"),
            "drain": plots.drain_chart(frames["queue_depth"], topo.ORDER_PLACED, restart_t, end,
                                       drained["drain_rate_msg_s"], run.timeline.frame()),
            "latency_cdf": plots.latency_cdf(
                lat, title="Backlog orders wait in the queue: latency is mostly queueing"),
        }
        return _finish(run, result)


# ---- idempotency -------------------------------------------------------------------------


def _barrier(run: Run, user: str = "sentinel") -> None:
    """Place one order and wait for its notification: everything queued before it is done.

    One consumer takes `order_placed` in order, so when this order is notified every
    message published before it has been handled.
    """
    r = run.lab.place_order(user, [{"item_id": "item_5", "quantity": 1, "price": 2.0}])
    r.raise_for_status()
    run.lab.wait_notified([r.json()["order_id"]], timeout=30)


def _place_some(run: Run, n: int, seed: int) -> list[dict[str, Any]]:
    load = run.place(LoadSpec(orders=n, concurrency=4, seed=seed, progress=False))
    ids = load.loc[load["accepted"], "order_id"].tolist()
    run.lab.wait_notified(ids, timeout=30)
    return [run.lab.get("order", f"/order/{i}") for i in ids]


def idempotency(broker: Any = None, *, orders: int = 10, modes: tuple[str, ...] = (
        "off", "memory", "sqlite"), out: str | Path = "runs", progress: bool = True,
        **lab: Any) -> ScenarioResult:
    """Republish K orders as exact and hand-made duplicates, per idempotency mode, with and
    without an inventory restart between original and duplicate; count double reservations."""
    rows, verdicts = [], {}
    parent = run_folder(out, "idempotency")
    with _broker_for(broker) as b:
        for mode in tqdm(modes, desc="idempotency modes", disable=not progress):
            cfg = LabConfig(idempotency=mode, initial_stock=PLENTY, **lab)
            with Run(f"idempotency-{mode}", b, out=parent, lab=cfg, progress=False) as run:
                for case, restart in (("duplicates", False), ("after restart", True)):
                    placed = _place_some(run, orders, seed=11 if restart else 10)
                    if restart:
                        run.faults.restart_service("inventory")
                    for order in placed:
                        run.faults.duplicate_order(order_event(order), same_event_id=True)
                        run.faults.duplicate_order(order_event(order), same_event_id=False)
                    _barrier(run)
                    ledger = run.lab.reservations()
                    ids = {o["order_id"] for o in placed}
                    doubled = {o: n for o, n in double_reservations(ledger["reservations"]).items()
                               if o in ids}
                    rows.append({"mode": mode, "case": case, "orders": len(placed),
                                 "duplicates_sent": 2 * len(placed),
                                 "double_reservations": len(doubled),
                                 "extra_reservations": sum(n - 1 for n in doubled.values())})
                state = run.collect()
                accepted = [o["order_id"] for o in state.orders]
                verdicts[mode] = check_run(accepted=accepted, inventory=state.inventory,
                                           ledger=state.ledger,
                                           notifications=state.notifications, dlq=state.dlq,
                                           allow_double_reservations=mode != "sqlite")
    table = pd.DataFrame(rows)
    by = {(r["mode"], r["case"]): r["double_reservations"] for r in rows}
    problems = []
    for mode, v in verdicts.items():
        problems += [f"{mode}: {p}" for p in v.problems]
    # The teaching points: only the durable, transactional record reserves exactly once.
    if "sqlite" in modes and any(by[("sqlite", c)] for c in ("duplicates", "after restart")):
        problems.append("sqlite mode reserved an order twice")
    if "off" in modes and not by[("off", "duplicates")]:
        problems.append("off mode showed no double reservation (the duplicates did not arrive?)")
    if "memory" in modes and not by[("memory", "after restart")]:
        problems.append("memory mode showed no double reservation after a restart")
    if "memory" in modes and by[("memory", "duplicates")]:
        problems.append("memory mode double-reserved without a restart")
    summary = {"scenario": "idempotency", "orders_per_case": orders,
               "double_reservations": {f"{m}/{c}": n for (m, c), n in by.items()},
               "duplicate_notifications": sum(v.counts["duplicate_notifications"]
                                              for v in verdicts.values()),
               "lost": sum(v.counts["lost"] for v in verdicts.values()),
               "stock_conserved": all(v.counts["stock_conserved"] for v in verdicts.values())}
    verdict = Verdict(not problems, {"per_mode": {m: v.to_dict() for m, v in verdicts.items()}},
                      problems)
    result = ScenarioResult("idempotency", summary, verdict, {"double_reservations": table})
    result.figures = {"double_reservations": plots.double_reservations_chart(table)}
    result.write(parent)
    return result


# ---- crash windows -----------------------------------------------------------------------


def crash_window(broker: Any = None, *, modes: tuple[str, ...] = ("off", "memory", "skip",
                                                                   "sqlite"),
                 points: tuple[str, ...] = POINTS, out: str | Path = "runs",
                 progress: bool = True, **lab: Any) -> ScenarioResult:
    """Crash the inventory at each named point while it handles an order, restart it, and
    see per design whether the order's notification is lost or its stock taken twice."""
    rows = []
    parent = run_folder(out, "crash-window")
    with _broker_for(broker) as b:
        for mode in tqdm(modes, desc="crash windows per design", disable=not progress):
            cfg = LabConfig(idempotency=mode, initial_stock=PLENTY, **lab)
            with Run(f"crash-window-{mode}", b, out=parent, lab=cfg, progress=False) as run:
                inventory = run.lab.services["inventory"]
                for point in points:
                    run.faults.restart_service("inventory", env={"LAB_CRASH_AT": f"{point}:*"})
                    r = run.lab.place_order(f"victim-{point}",
                                            [{"item_id": "item_1", "quantity": 1, "price": 10}])
                    r.raise_for_status()
                    victim = r.json()["order_id"]
                    code = inventory.wait_exit(30)
                    run.faults.crashed("inventory", point, victim)
                    run.faults.start_service("inventory", env={"LAB_CRASH_AT": ""})
                    _barrier(run)
                    notes = [n for n in run.lab.notifications() if n["order_id"] == victim]
                    ledger = run.lab.reservations()["reservations"]
                    taken = sum(1 for x in ledger if x["order_id"] == victim)
                    rows.append({"mode": mode, "point": point, "order_id": victim,
                                 "exit_code": code, "crashed": code == CRASH_EXIT_CODE,
                                 "notified": len(notes), "lost": int(not notes),
                                 "times_reserved": taken,
                                 "double_reservation": int(taken > 1)})
    table = pd.DataFrame(rows)
    problems = []
    if not table["crashed"].all():
        problems.append("some crash points did not fire")
    sqlite = table[table["mode"] == "sqlite"]
    if (sqlite["lost"] > 0).any() or (sqlite["double_reservation"] > 0).any():
        problems.append("sqlite mode lost a notification or reserved twice")
    summary = {"scenario": "crash-window",
               "lost": {f"{r.mode}/{r.point}": r.lost for r in table.itertuples()},
               "double_reservations": {f"{r.mode}/{r.point}": r.double_reservation
                                       for r in table.itertuples()},
               "sqlite_valid_at_every_point": not problems}
    verdict = Verdict(not problems, {"cases": len(table)}, problems)
    result = ScenarioResult("crash-window", summary, verdict, {"crash_window": table})
    result.figures = {
        "crash_lost": plots.outcome_table_chart(
            table, "lost", "Crash after commit, before publish: a dropped redelivery "
            "loses the notification", "notifications lost"),
        "crash_double": plots.outcome_table_chart(
            table, "double_reservation", "Without a durable record, a redelivery after a "
            "crash reserves again", "orders reserved twice"),
    }
    result.write(parent)
    return result


# ---- dead letters ------------------------------------------------------------------------


def dlq(broker: Any = None, *, orders: int = 40, malformed_each: int = 2, poison: int = 2,
        out: str | Path = "runs", progress: bool = True, **lab: Any) -> ScenarioResult:
    """Mix malformed messages and poison orders into valid ones: the DLQ receives exactly
    the bad ones with their reasons, poison after bounded retries; valid orders flow on."""
    cfg = LabConfig(initial_stock=PLENTY, extra_env={"LAB_FAIL_USER": POISON_USER}, **lab)
    with _broker_for(broker) as b, Run("dlq", b, out=out, lab=cfg, progress=progress) as run:
        injected = 0
        half = run.place(LoadSpec(orders=orders // 2, seed=21, description="valid orders"))
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
        state = run.collect()
        verdict = check_run(accepted=accepted + poison_ids, inventory=state.inventory,
                            ledger=state.ledger, notifications=state.notifications,
                            dlq=state.dlq, malformed_injected=injected,
                            expected_dead=set(poison_ids))
        frames = run.frames(load, state)
        summary = run.base_summary(load, state, verdict, frames["latency"])
        summary["orders_placed"] = verdict.counts["orders_placed"]
        poison_attempts = [m["attempts"] for m in state.dlq
                           if m["reason"] and m["reason"].startswith("handler failed")]
        summary.update({
            "malformed_injected": injected,
            "malformed_in_dlq": verdict.counts["malformed_in_dlq"],
            "poison_orders": len(poison_ids),
            "poison_attempts": poison_attempts,
            "dlq_reasons": sorted({m["reason"] for m in state.dlq}),
        })
        frames["dlq"]["body"] = frames["dlq"]["body"].str.slice(0, 200)
        result = ScenarioResult("dlq", summary, verdict, frames)
        result.figures = {
            "queue_depth": plots.depth_chart(
                frames["queue_depth"], run.timeline.frame(),
                queues=(topo.ORDER_PLACED, topo.DLQ),
                title="Bad messages step into the DLQ; valid orders never wait for them"),
        }
        return _finish(run, result)


# ---- reconnect ---------------------------------------------------------------------------


def reconnect(broker: Any = None, *, orders: int = 300, rate: float = 40.0,
              outage_after_s: float = 2.0, how: str = "kill", out: str | Path = "runs",
              progress: bool = True, **lab: Any) -> ScenarioResult:
    """Restart the broker mid-stream: services reconnect by themselves, the load client
    retries refused orders, and nothing accepted is lost."""
    import threading
    cfg = LabConfig(initial_stock=PLENTY, **lab)
    with _broker_for(broker) as b, Run("reconnect", b, out=out, lab=cfg,
                                       progress=progress) as run:
        if not getattr(b, "can_stop", True):
            raise RuntimeError("the reconnect scenario needs a broker it can stop "
                               "(local or docker), not a URL")
        pids = {n: s.proc.pid for n, s in run.lab.services.items()}
        result_box: dict[str, pd.DataFrame] = {}
        spec = LoadSpec(orders=orders, rate=rate, concurrency=8, seed=31,
                        retry_unavailable_for=60.0, description="orders through an outage")
        loader = threading.Thread(target=lambda: result_box.update(load=run.place(spec)))
        loader.start()
        run.wait_depth(topo.ORDER_PLACED, lambda n: True, 5, "broker reachable")
        run.hold(outage_after_s)  # let the stream establish itself before the outage
        if how == "kill":
            run.faults.kill_broker()
        else:
            run.faults.stop_broker()
        run.faults.start_broker()
        run.timeline.record("ready", "broker", "takes connections again")
        for name, svc in run.lab.services.items():
            svc.wait_healthy(60)
            run.timeline.record("healthy", name, "reconnected")
        loader.join()
        load = result_box["load"]
        accepted = load.loc[load["accepted"], "order_id"].tolist()
        run.wait_notified(accepted, timeout=60)
        state = run.collect()
        verdict = run.judge(load, state)
        same_pids = all(run.lab.services[n].proc.pid == p for n, p in pids.items())
        reconnects = {n: (h or {}).get("reconnects") for n, h in state.health.items()}
        problems = list(verdict.problems)
        if not same_pids:
            problems.append("a service was restarted; it should have reconnected by itself")
        if not all(reconnects.values()):
            problems.append(f"not every service reports a reconnect: {reconnects}")
        verdict = Verdict(not problems, verdict.counts, problems)
        frames = run.frames(load, state)
        summary = run.base_summary(load, state, verdict, frames["latency"])
        gap = frames["queue_depth"]
        gap_t = gap[gap["ready"].isna()]["t"]
        summary.update({
            "outage": how,
            "gap_s": round(float(gap_t.max() - gap_t.min()), 2) if len(gap_t) else 0.0,
            "services_restarted": not same_pids,
            "reconnects": reconnects,
            "refused_503_then_retried": int((load["attempts"] > 1).sum()),
            "orders_refused_finally": int((~load["accepted"]).sum()),
        })
        result = ScenarioResult("reconnect", summary, verdict, frames)
        result.figures = {
            "throughput": plots.throughput_chart(
                load, frames["latency"], run.timeline.frame(),
                title="Broker restart: the flow stops, the services reconnect, it resumes"),
            "http": plots.http_chart(load, run.timeline.frame()),
        }
        return _finish(run, result)


# ---- all ----------------------------------------------------------------------------------

SCENARIOS: dict[str, Callable[..., ScenarioResult]] = {
    "baseline": baseline,
    "backlog-drain": backlog_drain,
    "idempotency": idempotency,
    "crash-window": crash_window,
    "dlq": dlq,
    "reconnect": reconnect,
}


NEEDS_RESTARTABLE_BROKER = ("reconnect",)


def run_all(broker: Any = None, *, orders: int | None = None, out: str | Path = "runs",
            progress: bool = True) -> tuple[list[ScenarioResult], Path]:
    """Every scenario in sequence on one broker, then one combined report."""
    parent = run_folder(out, "all")
    results = []
    with _broker_for(broker) as b:
        bar = tqdm(SCENARIOS.items(), desc="scenarios", disable=not progress)
        for name, fn in bar:
            bar.set_postfix_str(name)
            if name in NEEDS_RESTARTABLE_BROKER and not getattr(b, "can_stop", True):
                log.warning("skipping %s: it restarts the broker, and a %s broker cannot be "
                            "restarted by the harness", name, b.provider)
                continue
            kwargs: dict[str, Any] = {"out": parent, "progress": False}
            if orders is not None and name in ("baseline", "backlog-drain", "reconnect", "dlq"):
                kwargs["orders"] = orders
            results.append(fn(b, **kwargs))
    return results, combined_report(results, parent)
