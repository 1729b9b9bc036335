"""`python -m harness bench`: how fast the lab drains, against plain pika on the same broker.

Speed is measured here, never asserted in a test. The figures that matter:
- the floor: the inventory step written in plain pika at full speed (`harness.bench.floor`),
  draining a backlog of N orders;
- the lab's inventory draining the same backlog, on the same broker, in the same run,
  as a fraction of the floor (target: 0.8 or better), at SQLite synchronous FULL and
  NORMAL, and each service's RSS meanwhile;
- latency per hop at a moderate steady load, and the HTTP accept rate of the order service;
- HTTP intake with wrk against the intake floor and against the naive design, in turn,
  median of several rounds.
With `profile=True`, py-spy samples the lab's inventory while it drains (raw folded stacks).
"""

from __future__ import annotations

import json
import logging
import statistics
from pathlib import Path
from typing import Any

from harness.bench.drain import PLENTY, drain_rate, floor_drain, spying
from harness.bench.floor import SYNCHRONOUS
from harness.bench.intake import (
    SHAPES,
    in_turn,
    non_2xx_in_any_run,
    status_mix,
    write_script,
    wrk_path,
)
from harness.bench.intake_floor import (
    INTAKE_FLOOR_TARGET,
    SCALING_TARGET,
    describe_intake,
    floor_threads,
    intake_targets,
    running_floor,
)
from harness.bench.versus import NAIVE_SPEC, intake, latency_at
from harness.brokers import Broker
from harness.lab import Lab, LabConfig
from harness.lab.impl import Impl
from harness.load import LoadSpec, order_mix, place_orders
from harness.observe import latency_frame, percentiles
from harness.reporting.results import run_folder

log = logging.getLogger(__name__)

TARGET = 0.8  # the lab's drain as a fraction of the floor, at FULL and at NORMAL (issue 21)
INTAKE_TARGET = 5.0  # HTTP intake (2xx/s) at least this many times the naive design's
P50_TARGET = 0.2  # end-to-end p50 at most this fraction of the naive design's
P99_TARGET_MS = 25.0  # end-to-end p99 under this at 50 orders/s


def steady_latency(broker: Broker, orders: int = 1000, rate: float = 100.0) -> dict[str, Any]:
    """Latency per hop, and the HTTP accept rate, at a steady moderate load."""
    cfg = LabConfig(initial_stock=PLENTY, log_level="WARNING")
    with Lab(broker, cfg) as lab:
        load = place_orders(lab.url("order"), LoadSpec(orders=orders, rate=rate, concurrency=8,
                                                        progress=False))
        ids = load.loc[load["accepted"], "order_id"].tolist()
        notes = lab.wait_notified(ids, 120)
        lat = latency_frame(notes, load)
        flat_out = place_orders(lab.url("order"), LoadSpec(orders=orders, concurrency=8,
                                                            seed=5, progress=False))
    span = flat_out["t_answered"].max() - flat_out["t_sent"].min()
    return {
        "steady_rate_orders_s": rate,
        "latency_ms": {hop: percentiles(lat[col]) for hop, col in (
            ("placed_to_reserved", "inventory_ms"), ("reserved_to_notified", "notify_ms"),
            ("end_to_end", "end_to_end_ms"))},
        "http_ms": percentiles(load["http_ms"]),
        "http_accept_rate_orders_s": round(len(flat_out) / span, 1) if span else None,
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def intake_vs_floor(broker: Broker, folder: Path, *, seconds: float, rounds: int,
                    synchronous: str, profile: bool) -> dict[str, Any]:
    """The intake floor and the lab's order service, each alone, driven by wrk in turn.

    Both run side by side for the whole measurement and take turns per shape, `rounds`
    times with the order alternating (harness.bench.intake.in_turn): each side's figure per
    shape is its median run. Only the order service runs: nothing drains order_placed on
    either side.
    """
    order = order_mix(LoadSpec(orders=1, seed=11, progress=False))[0]
    script = write_script(folder, order)
    cfg = LabConfig(initial_stock=PLENTY, log_level="WARNING",
                    extra_env={"SQLITE_SYNCHRONOUS": synchronous})
    with running_floor(broker, folder, synchronous) as floor_url, \
            Lab(broker, cfg, services=("order",), workdir=folder / "intake-vs-floor-lab") as lab:
        pid = lab.services["order"].proc.pid
        last = len(SHAPES) - 1

        def around(side: str, rnd: int, shape: int) -> Any:
            if profile and side == "lab" and rnd == rounds - 1 and shape == last:
                return spying(pid, folder / "order-profile-wrk.txt")
            return None

        measured = in_turn({"floor": floor_url + "/order", "lab": lab.url("order") + "/order"},
                           script, seconds=seconds, rounds=rounds, around_run=around)
        grouped = lab.get("order", "/health")
    floor_runs, lab_runs = measured["floor"]["runs"], measured["lab"]["runs"]
    by_conns = {str(r["connections"]): r["ok_2xx_s"] for r in lab_runs}
    return {"floor": {"impl": "intake floor", "http_threads": floor_threads(),
                      **measured["floor"]},
            "lab": {"impl": "lab", "services": ["order"], **measured["lab"],
                    "group_commits": grouped.get("group_commits"),
                    "grouped_orders": grouped.get("grouped_orders")},
            "sqlite_synchronous": synchronous, "rounds": rounds,
            "lab_vs_floor_by_connections": {
                str(a["connections"]): _ratio(a["ok_2xx_s"], b["ok_2xx_s"])
                for a, b in zip(lab_runs, floor_runs, strict=True)},
            "lab_4_vs_1": _ratio(by_conns.get("4"), by_conns.get("1")),
            "target_vs_floor": INTAKE_FLOOR_TARGET, "target_4_vs_1": SCALING_TARGET}


def versus(broker: Broker, other: Impl | str | Path, folder: Path, *, intake_seconds: float,
           rounds: int, e2e_orders: int, e2e_rate: float, backlog: int) -> dict[str, Any]:
    """The lab and `other` side by side: wrk intake, latency at `e2e_rate`, drain of `backlog`.

    The drain backlog is small on purpose: the naive design takes one message at a time and
    opens a connection per publish; the lab drains the same backlog in the same run.
    """
    result: dict[str, Any] = {}
    if intake_seconds > 0:
        if wrk_path() is None:
            result["intake"] = {"skipped": "wrk is not installed (apt-get install -y wrk)"}
        else:
            both = intake(broker, other, folder, seconds=intake_seconds, rounds=rounds)
            lab, them = both["lab"], both["other"]
            result["intake"] = {
                "lab": lab, "other": them, "rounds": rounds,
                "ratio_by_connections": {
                    str(a["connections"]): _ratio(a["ok_2xx_s"], b["ok_2xx_s"])
                    for a, b in zip(lab["runs"], them["runs"], strict=True)},
                "target_ratio": INTAKE_TARGET}
    if e2e_orders > 0:
        lab = latency_at(broker, None, orders=e2e_orders, rate=e2e_rate)
        them = latency_at(broker, other, orders=e2e_orders, rate=e2e_rate)
        result["latency"] = {
            "rate_orders_s": e2e_rate, "lab": lab, "other": them,
            "p50_ratio": _ratio(lab["end_to_end_ms"]["p50"], them["end_to_end_ms"]["p50"]),
            "target_p50_ratio": P50_TARGET, "target_p99_ms": P99_TARGET_MS}
    if backlog > 0:
        lab = drain_rate(broker, backlog)
        them = drain_rate(broker, backlog, impl=other)
        result["drain"] = {"backlog": backlog, "lab": lab, "other": them,
                           "ratio": _ratio(lab["drain_rate_msg_s"], them["drain_rate_msg_s"])}
    return result


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each of issue 11's speed targets: what was measured, the target, and whether it is met."""
    rows = [{"target": f"drain >= {TARGET} of the floor "
                       f"(SQLITE_SYNCHRONOUS={d['sqlite_synchronous']})",
             "value": d["drain_vs_floor"], "met": (d["drain_vs_floor"] or 0) >= TARGET}
            for d in report["drains"]]
    rows += intake_targets(report.get("intake") or {})
    vs = report.get("versus") or {}
    for conns, ratio in (vs.get("intake") or {}).get("ratio_by_connections", {}).items():
        rows.append({"target": f"intake >= {INTAKE_TARGET}x naive ({conns} connection(s))",
                     "value": ratio, "met": ratio is not None and ratio >= INTAKE_TARGET})
    lat = vs.get("latency")
    if lat:
        ratio = lat["p50_ratio"]
        rows.append({"target": f"end-to-end p50 <= {P50_TARGET} of naive's",
                     "value": ratio, "met": ratio is not None and ratio <= P50_TARGET})
        p99 = lat["lab"]["end_to_end_ms"]["p99"]
        rows.append({"target": f"end-to-end p99 < {P99_TARGET_MS} ms at "
                               f"{lat['rate_orders_s']:.0f}/s",
                     "value": p99, "met": p99 is not None and p99 < P99_TARGET_MS})
    return rows


def drains_at(broker: Broker, folder: Path, *, settings: tuple[str, ...], backlog: int,
              runs: int, prefetch: int, profile: bool) -> list[dict[str, Any]]:
    """Floor and lab drain `backlog` at each SQLite `synchronous` setting, `runs` times.

    In each run, every setting is measured once on each side, the side that goes first
    alternating from run to run (floor first in the first run); the figures are medians over
    the runs, so that a machine drifting during the bench drifts for both sides alike.
    """
    floors: dict[str, list[dict[str, Any]]] = {s: [] for s in settings}
    labs: dict[str, list[dict[str, Any]]] = {s: [] for s in settings}
    for i in range(runs):
        for sync in settings:
            prof = (folder / f"inventory-profile-{sync.lower()}-{i + 1}.txt" if profile
                    else None)
            for side in (("floor", "lab") if i % 2 == 0 else ("lab", "floor")):
                if side == "floor":
                    floors[sync].append(floor_drain(broker, backlog, prefetch, sync))
                else:
                    labs[sync].append(drain_rate(broker, backlog, prefetch, prof, sync))
    result = []
    for sync in settings:
        floor_rate = statistics.median(f["drain_rate_msg_s"] for f in floors[sync])
        lab_rate = statistics.median(d["drain_rate_msg_s"] or 0 for d in labs[sync])
        result.append({"sqlite_synchronous": sync,
                       "floor": {"drain_rate_msg_s": floor_rate, "each": floors[sync]},
                       "lab": {"drain_rate_msg_s": lab_rate, "each": labs[sync]},
                       "drain_vs_floor": _ratio(lab_rate, floor_rate)})
    return result


def run_bench(broker: Broker, *, backlog: int = 20_000, runs: int = 3, prefetch: int = 200,
              synchronous: str | tuple[str, ...] = SYNCHRONOUS, latency_orders: int = 1000,
              profile: bool = False, naive: str | Path | None = NAIVE_SPEC,
              intake_seconds: float = 5.0, intake_rounds: int = 3, e2e_orders: int = 500,
              e2e_rate: float = 50.0, naive_backlog: int = 500,
              out: str | Path = "runs") -> dict[str, Any]:
    """Floor and lab drains at each `synchronous` setting (medians of `runs`), latency,
    intake against its floor and against `naive`; write bench.json.

    Both sides of a drain commit SQLite with the same `synchronous` (the lab's default is
    FULL: one fsync per burst), so that the fraction compares designs, not durability
    settings; by default the drain is measured at FULL and at NORMAL. With
    `intake_seconds`, the lab's order service and the intake floor (harness.bench.
    intake_floor) are driven by wrk in turn, shape by shape, at 1, 4 and 16 connections,
    `intake_rounds` times (medians), with the first setting. With `naive` (an impl.toml;
    None to skip), the lab is also measured against it: wrk intake side by side the same
    way, latency at `e2e_rate` over `e2e_orders`, and both draining `naive_backlog` (0
    skips any of the three).
    """
    settings = (synchronous,) if isinstance(synchronous, str) else tuple(synchronous)
    if not settings or any(s not in SYNCHRONOUS for s in settings):
        raise ValueError(f"synchronous must be among {SYNCHRONOUS}, not {synchronous!r}")
    folder = run_folder(out, "bench")
    drains = drains_at(broker, folder, settings=settings, backlog=backlog, runs=runs,
                       prefetch=prefetch, profile=profile)
    rss: dict[str, float] = {}
    for d in drains:
        for each in d["lab"]["each"]:
            for name, mb in each["rss_mb_peak"].items():
                rss[name] = max(mb, rss.get(name, 0.0))
    report: dict[str, Any] = {
        "broker": {"provider": broker.provider, "version": broker.version()},
        "runs": runs, "backlog": backlog, "prefetch": prefetch,
        "drains": drains,
        "target_vs_floor": TARGET,
        "rss_mb_peak_while_draining": rss,
        **(steady_latency(broker, orders=latency_orders) if latency_orders else {}),
    }
    if intake_seconds > 0:
        report["intake"] = (
            intake_vs_floor(broker, folder, seconds=intake_seconds, rounds=intake_rounds,
                            synchronous=settings[0], profile=profile)
            if wrk_path() is not None
            else {"skipped": "wrk is not installed (apt-get install -y wrk)"})
    if naive is not None and not Path(naive).exists():
        report["versus"] = {"skipped": f"no implementation spec at {naive}"}
    elif naive is not None:
        report["versus"] = {"impl": str(naive), **versus(
            broker, naive, folder, intake_seconds=intake_seconds, rounds=intake_rounds,
            e2e_orders=e2e_orders, e2e_rate=e2e_rate, backlog=naive_backlog)}
    report["targets"] = targets(report)
    (folder / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    report["run_dir"] = str(folder)
    return report


def _describe_versus(vs: dict[str, Any]) -> list[str]:
    if "skipped" in vs:
        return [f"versus another implementation: skipped ({vs['skipped']})"]
    lines = [f"against {vs['impl']}:"]
    it = vs.get("intake")
    if it and "skipped" in it:
        lines.append(f"  HTTP intake: skipped ({it['skipped']})")
    elif it:
        for a, b in zip(it["lab"]["runs"], it["other"]["runs"], strict=True):
            lines.append(
                f"  HTTP intake (wrk, {a['connections']} connection(s), {a['seconds']:.0f} s, "
                f"median of {it['rounds']}):"
                f" lab {a['ok_2xx_s']} 2xx/s [{status_mix(a)}], {it['other']['impl']} "
                f"{b['ok_2xx_s']} 2xx/s [{status_mix(b)}] -> "
                f"{it['ratio_by_connections'][str(a['connections'])]}x")
        for side in ("lab", "other"):
            bad = non_2xx_in_any_run(it[side])
            if bad:
                lines.append(f"  {it[side]['impl']}: {bad}")
    lat = vs.get("latency")
    if lat:
        for side in ("lab", "other"):
            e = lat[side]["end_to_end_ms"]
            lines.append(f"  end-to-end at {lat['rate_orders_s']:.0f}/s, {lat[side]['impl']}: "
                         f"p50 {e['p50']} ms, p95 {e['p95']} ms, p99 {e['p99']} ms "
                         f"({lat[side]['measured']} orders, HTTP {lat[side]['statuses']}; p99 "
                         f"per hop: inventory {lat[side]['placed_to_decided_ms']['p99']} ms, "
                         f"notification {lat[side]['decided_to_notified_ms']['p99']} ms)")
    dr = vs.get("drain")
    if dr:
        lines.append(f"  drain of {dr['backlog']}: lab {dr['lab']['drain_rate_msg_s']} msg/s, "
                     f"{dr['other']['impl']} {dr['other']['drain_rate_msg_s']} msg/s -> "
                     f"{dr['ratio']}x")
    return lines


def describe(report: dict[str, Any]) -> str:
    """A short text summary of a bench report, ending with each target met or missed."""
    lines = [f"broker: {report['broker']['provider']} {report['broker']['version']}"
             f" ({report['runs']} run(s), medians)"]
    for d in report["drains"]:
        frac = d["drain_vs_floor"] or 0.0
        verdict = "meets" if frac >= report["target_vs_floor"] else "BELOW"
        lines += [
            f"SQLite synchronous={d['sqlite_synchronous']}, {report['backlog']} orders, "
            f"prefetch {report['prefetch']}: plain-pika floor "
            f"{d['floor']['drain_rate_msg_s']:.0f} msg/s, lab inventory "
            f"{d['lab']['drain_rate_msg_s']} msg/s = {frac:.2f} of the floor ({verdict} the "
            f"target {report['target_vs_floor']})"]
    lines += [
        "RSS while draining (peak MiB): " + ", ".join(
            f"{k} {v}" for k, v in report["rss_mb_peak_while_draining"].items()),
    ]
    if "latency_ms" in report:
        lat = report["latency_ms"]["end_to_end"]
        lines += [f"end-to-end latency at {report['steady_rate_orders_s']:.0f} orders/s: "
                  f"p50 {lat['p50']} ms, p99 {lat['p99']} ms",
                  f"HTTP accept rate (8 clients, flat out): "
                  f"{report['http_accept_rate_orders_s']} orders/s"]
    if "intake" in report:
        lines += describe_intake(report["intake"])
    if "versus" in report:
        lines += _describe_versus(report["versus"])
    lines.append("targets:")
    lines += [f"  {'met   ' if t['met'] else 'MISSED'} {t['target']}: {t['value']}"
              for t in report.get("targets", [])]
    lines.append(f"written to {report['run_dir']}/bench.json")
    return "\n".join(lines)
