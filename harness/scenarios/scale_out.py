"""Scale-out: the same backlog drained by 1, 2 and 4 inventories (competing consumers).

For each prefetch and consumer count: stop every inventory, place a backlog, let a gate
hold it (harness.bench.consumers.Gate), start N replicas, wait until all N consume, release the
gate, and measure the drain from the inventory's own outcome timestamps. Each replica's
GET /health says how many outcomes it published: the per-consumer delivery counts.
Then: outcome order against queue order (inversions), the fix with a single-active-consumer
queue, and a kill -9 of one replica of three mid-drain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pika
from matplotlib.figure import Figure

from harness.bench import consumers as cq
from harness.invariants import double_reservations, invariant_checks
from harness.lab import LabConfig
from harness.lab.impl import Impl, resolve
from harness.load import LoadSpec
from harness.reporting.results import ScenarioResult
from harness.runner import Run, order_event
from harness.scenarios.backlog_drain import drain_stats
from harness.scenarios.common import PLENTY, accepted_ids, broker_for, finish, judge
from harness.scenarios.registry import Scenario, register, require_lab
from harness.scenarios.summary import RunSummary
from harness.waiting import wait_until
from lab_services import events
from lab_services import topology as topo

NAME = "scale-out"


@dataclass
class ScaleOutSummary(RunSummary):
    """Drain rate per (consumers, prefetch), per-consumer counts, order, and the kill run."""

    work_ms: float = 0.0
    backlog: int = 0
    drains: list[dict[str, Any]] = field(default_factory=list)
    order_demo: dict[str, Any] = field(default_factory=dict)
    kill_run: dict[str, Any] = field(default_factory=dict)
    duplicates_sent: int = 0


def _published(run: Run, replicas: int) -> list[int | None]:
    """Outcomes each running replica published since it started (its bus stats)."""
    counts: list[int | None] = []
    for proc in run.lab.processes["inventory"][:replicas]:
        health = proc.health() if proc.running else None
        counts.append(int(health.get("bus", {}).get("published", 0)) if health else None)
    return counts


def _outcome_inversions(notes: list[dict[str, Any]], queue_order: list[str]) -> int:
    """Inversions of the outcome timestamps taken in queue order."""
    decided = {n["order_id"]: events.parse_timestamp(n["outcome_timestamp"])
               for n in notes if n.get("outcome_timestamp")}
    return cq.inversions([decided[o] for o in queue_order if o in decided])


def _drain(run: Run, *, consumers: int, prefetch: int, orders: int, seed: int,
           work_ms: float, kill: bool = False) -> tuple[dict[str, Any], pd.DataFrame]:
    """One drain of a fresh backlog by `consumers` replicas (replica 2 killed if `kill`)."""
    lab, url = run.lab, run.lab.amqp_url
    label = f"{consumers} x prefetch {prefetch}" + (" (kill -9 of replica 2)" if kill else "")
    run.faults.stop_service("inventory")
    load = run.place(LoadSpec(orders=orders, concurrency=8, seed=seed,
                              description=f"backlog for {label}"))
    accepted = load.loc[load["accepted"], "order_id"].tolist()
    run.wait_depth(topo.QUEUE_ORDER_PLACED, lambda n: n >= len(accepted), 30,
                   f"{len(accepted)} orders waiting in {topo.QUEUE_ORDER_PLACED}")
    with cq.Gate(url, topo.QUEUE_ORDER_PLACED) as gate:
        queue_order = gate.take(len(accepted), timeout=30)
        env = {"PREFETCH": str(prefetch), "WORK_MS": str(work_ms)}
        for i in range(consumers):
            lab.start_service("inventory", env, wait=False, replica=i)
        for proc in lab.processes["inventory"][:consumers]:
            proc.wait_healthy(lab.config.health_timeout)
        # The gate is a consumer too.
        cq.wait_consumers(url, topo.QUEUE_ORDER_PLACED, consumers + 1, 30)
        before = int((lab.processes["inventory"][0].health() or {}).get("processed_orders", 0))
        released = pd.Timestamp.now(tz="UTC")
        run.timeline.record("release", topo.QUEUE_ORDER_PLACED,
                            f"{len(accepted)} orders to {label}")
    row: dict[str, Any] = {"consumers": consumers, "prefetch": prefetch,
                           "backlog": len(accepted)}
    if kill:
        # The store's processed count is shared by every replica and moves before the
        # notifications do: kill replica 2 once a third of the backlog is decided.
        first = lab.processes["inventory"][0]
        def processed() -> int:
            return int((first.health() or {}).get("processed_orders", 0))
        wait_until(lambda: processed() - before >= len(accepted) // 3 or None, 60,
                   "a third of the backlog decided", max_interval=0.05)
        lab.kill("inventory", replica=1)
        at_kill = processed() - before
        run.timeline.record("kill", "inventory-2", f"kill -9 of replica 2 after {at_kill}")
        row.update({"decided_at_kill": at_kill, "mid_drain": at_kill < len(accepted)})
    run.wait_notified(accepted, timeout=60 + orders * (work_ms / 1000 + 0.02))
    per = _published(run, consumers)
    notes = run.lab.notifications()
    # From the release: an inventory decides a whole burst at once (see drain_stats).
    row.update(drain_stats(notes, set(accepted), released, rate_from="release"))
    row["per_consumer"] = per
    row["inversions"] = _outcome_inversions(notes, queue_order)
    row["pairs"] = len(queue_order) * (len(queue_order) - 1) // 2
    return row, load


def _order_demo(run: Run, *, orders: int, prefetch: int, work_ms: float,
                seed: int) -> tuple[dict[str, Any], pd.DataFrame]:
    """Two plain consumers on a shared queue and on a single-active-consumer queue, fed the
    same orders: count inversions of the finishing order against the queue's order."""
    url, tag = run.lab.amqp_url, run.run_dir.name[-8:]
    names = {k: f"scale-out.{k}.{tag}" for k in ("reference", "shared", "single-active")}
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        for kind, q in names.items():
            args = {"x-single-active-consumer": True} if kind == "single-active" else None
            ch.queue_declare(q, durable=True, arguments=args)
            ch.queue_bind(q, topo.ORDER_EVENTS, topo.KEY_ORDER_PLACED)
        load = run.place(LoadSpec(orders=orders, concurrency=8, seed=seed,
                                  description="orders for the order demo"))
        accepted = load.loc[load["accepted"], "order_id"].tolist()
        # Every queue bound to the exchange got the same messages in the same order; the
        # reference queue, read front to back, says which order that was.
        wait_until(lambda: ch.queue_declare(names["reference"], passive=True)
                   .method.message_count >= len(accepted) or None, 30, "the reference queue")
        with cq.Gate(url, names["reference"]) as gate:
            reference = gate.take(len(accepted), timeout=30)
        rank = {o: i for i, o in enumerate(reference)}
        demo: dict[str, Any] = {"orders": len(accepted), "consumers": 2, "prefetch": prefetch,
                                "pairs": len(reference) * (len(reference) - 1) // 2}
        for kind in ("shared", "single-active"):
            done = cq.consume_all(url, names[kind], consumers=2, prefetch=prefetch,
                                  work_ms=work_ms, expected=len(accepted), seed=seed,
                                  timeout=30 + len(accepted) * work_ms / 1000,
                                  # The single active consumer takes everything anyway.
                                  start_together=kind == "shared")
            demo[kind] = {"inversions": cq.inversions([rank[o] for o, _k in done]),
                          "per_consumer": [sum(1 for _o, k in done if k == c) for c in (0, 1)]}
        for q in names.values():
            ch.queue_delete(q)
    finally:
        if conn.is_open:
            conn.close()
    run.wait_notified(accepted, timeout=60 + orders * 0.02)
    return demo, load


def _send_duplicates(run: Run, load: pd.DataFrame, n: int, replicas: list[int]) -> int:
    """Republish n processed orders (same event_id) and wait until they were handled again."""
    ids = load.loc[load["accepted"], "order_id"].tolist()[:n]
    def total() -> int:
        return sum(c or 0 for c in _published(run, max(replicas) + 1))
    before = total()
    for order_id in ids:
        run.faults.duplicate_order(order_event(run.lab.get("order", f"/order/{order_id}")),
                                   same_event_id=True)
    # Each redelivery publishes an outcome, whichever design handles it.
    wait_until(lambda: total() >= before + len(ids) or None, 60, "duplicates handled")
    return len(ids)


def _rate_chart(drains: pd.DataFrame) -> Figure:
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for prefetch, rows in drains.groupby("prefetch"):
        rows = rows.sort_values("consumers")
        ax.plot(rows["consumers"], rows["drain_rate_msg_s"], marker="o",
                label=f"prefetch {prefetch}")
    ax.set_xticks(sorted(drains["consumers"].unique()))
    ax.set_xlabel("inventory replicas (competing consumers on order_placed)")
    ax.set_ylabel("drain rate (orders/s)")
    ax.set_ylim(bottom=0)
    ax.set_title("More consumers drain the same backlog faster")
    ax.legend()
    fig.tight_layout()
    return fig


def _fairness_chart(drains: pd.DataFrame) -> Figure:
    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    labels = [f"{r.consumers} x p{r.prefetch}" for r in drains.itertuples()]
    width = 0.8 / max(drains["consumers"].max(), 1)
    for k in range(int(drains["consumers"].max())):
        heights = [(r.per_consumer[k] or 0) if k < len(r.per_consumer) else 0
                   for r in drains.itertuples()]
        ax.bar([i + k * width for i in range(len(labels))], heights, width,
               label=f"replica {k + 1}")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(labels))], labels)
    ax.set_xlabel("replicas x prefetch")
    ax.set_ylabel("outcomes published")
    ax.set_title("Per-consumer deliveries: RabbitMQ shares one queue among its consumers")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def scale_out(broker: Any = None, *, orders: int = 2000, consumers: tuple[int, ...] = (1, 2, 4),
              prefetches: tuple[int, ...] = (1, 50), work_ms: float = 2.0,
              order_demo: bool = True, kill: bool = True, duplicates: int = 0,
              seed: int = 11, out: str | Path = "runs", progress: bool = True,
              impl: Impl | str | Path | None = None, **lab: Any) -> ScenarioResult:
    """Drain one backlog size with each consumer count and prefetch; show order across
    consumers and its fix; kill one replica of three mid-drain.

    `duplicates` republishes that many processed orders at the end (with
    `idempotency="off"` this is the deliberately broken configuration).
    """
    require_lab(resolve(impl), NAME)
    if not consumers or min(consumers) < 1 or not prefetches or min(prefetches) < 1:
        raise ValueError("consumers and prefetches must be non-empty and at least 1")
    most = max(max(consumers), 3 if kill else 1)
    # Extra environment (e.g. STORE_URL=postgresql://... for a shared PostgreSQL store)
    # reaches every replica, with the scenario's WORK_MS.
    extra = {**lab.pop("extra_env", {}), "WORK_MS": str(work_ms)}
    cfg = LabConfig(initial_stock=PLENTY, extra_env=extra, **lab)
    with broker_for(broker) as b, Run(NAME, b, out=out, lab=cfg, impl=impl, progress=progress,
                                      replicas={"inventory": most}) as run:
        loads, drains = [], []
        trial = 0
        for prefetch in prefetches:
            for n in consumers:
                trial += 1
                row, load = _drain(run, consumers=n, prefetch=prefetch, orders=orders,
                                   seed=seed + trial, work_ms=work_ms)
                drains.append(row)
                loads.append(load)
        kill_row: dict[str, Any] = {}
        if kill:
            # Slower work for this drain only, so that it lasts long enough (about 2 s of
            # work) for the kill to land in the middle of it, whatever the backlog size.
            kill_work = max(work_ms, 6000 / max(orders, 1))
            # A window small enough that most of the backlog still waits in the queue: a
            # replica decides a whole window at once, and with every order in some window
            # the decided count would jump from a third to all in one step.
            kill_prefetch = max(1, min(max(prefetches), orders // 12))
            kill_row, kill_load = _drain(run, consumers=3, prefetch=kill_prefetch,
                                         orders=orders, seed=seed + 100, work_ms=kill_work,
                                         kill=True)
            kill_row["work_ms"] = kill_work
            loads.append(kill_load)
        demo: dict[str, Any] = {}
        if order_demo:
            demo, demo_load = _order_demo(run, orders=min(orders, 400), prefetch=min(prefetches),
                                          work_ms=work_ms, seed=seed + 200)
            loads.append(demo_load)
        sent = 0
        if duplicates:
            running = [i for i, p in enumerate(run.lab.processes["inventory"]) if p.running]
            sent = _send_duplicates(run, loads[-1], duplicates, running)
        load = pd.concat(loads, ignore_index=True)
        state = run.collect()
        verdict = judge(run, state, accepted_ids(load))
        if kill:
            kill_ids = set(kill_load.loc[kill_load["accepted"], "order_id"])
            noted = {n["order_id"] for n in state.notifications}
            kill_row.update({
                "lost": len(kill_ids - noted),
                "double_reservations": len(set(double_reservations(
                    state.ledger["reservations"])) & kill_ids),
                "notified": len(kill_ids & noted)})
        frames = run.frames(load, state)
        table = pd.DataFrame(drains)
        frames["drains"] = table
        summary = ScaleOutSummary(
            **run.base_summary(load, state, verdict, frames["latency"]), work_ms=work_ms,
            backlog=orders, drains=drains, order_demo=demo, kill_run=kill_row,
            duplicates_sent=sent)
        result = ScenarioResult(NAME, summary, verdict, frames)
        result.figures = {"drain_rate": _rate_chart(table),
                          "per_consumer": _fairness_chart(table)}
        tried = (f"drained {orders}-order backlogs with {', '.join(map(str, consumers))} "
                 f"inventories at prefetch {', '.join(map(str, prefetches))}"
                 + (", and killed one of three inventories mid-drain" if kill else ""))
        result.checks = invariant_checks(NAME, tried, verdict, chart="drain_rate", only=(
            "lost", "duplicate_notifications", "double_reservations", "stock_conserved"))
        return finish(run, result)


register(Scenario(NAME, scale_out, black_box=False, rank=60,
                  ci_kwargs={"orders": 40, "consumers": (1, 2), "prefetches": (1, 20)},
                  summary="1, 2 and 4 inventories drain one backlog; order across consumers; "
                          "kill one mid-drain"))
