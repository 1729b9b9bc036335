"""`python -m harness bench`: how fast the pipeline is, next to raw pika on the same broker.

Speed is measured here, never asserted in a test. The figures that matter:
- drain rate: the inventory emptying a backlog of N orders (consume, reserve in SQLite,
  publish the outcome confirmed, ack), against the raw-pika floor of publishing with one
  confirm at a time (the design the bus must beat: BROKER_FACTS.md measured ~1.7k msg/s);
- latency per hop at a moderate steady load;
- the HTTP accept rate of the order service (each answer waits for a publisher confirm).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pika

from harness import amqp
from harness.lab import Lab, LabConfig
from harness.load import LoadSpec, order_mix, place_orders
from harness.observe import latency_frame, percentiles
from harness.report import run_folder
from harness.waiting import wait_until
from lab_services import events
from lab_services import topology as topo
from lab_services.order import order_placed_message

PLENTY = "10000000"


def raw_confirm_floor(amqp_url: str, n: int = 2000) -> float:
    """msg/s publishing persistent messages one confirm at a time (BlockingConnection)."""
    with amqp.channel(amqp_url) as ch:
        ch.queue_declare("bench.floor", durable=True)
        body = b"x" * 200
        props = pika.BasicProperties(delivery_mode=2)
        start = time.perf_counter()
        for _ in range(n):
            ch.basic_publish("", "bench.floor", body, props)
        rate = n / (time.perf_counter() - start)
        ch.queue_delete("bench.floor")
    return rate


def _publish_backlog(amqp_url: str, n: int) -> None:
    """Publish n valid OrderPlaced events straight to the exchange (fast: no confirms)."""
    mix = order_mix(LoadSpec(orders=n, seed=99, progress=False))
    with amqp.channel(amqp_url, confirm=False) as ch:
        for i, o in enumerate(mix):
            items = events.validate_items(o["items"])
            event = events.order_placed(f"ORD-BENCH-{i:07d}", o["user_id"], items)
            msg = order_placed_message(event)
            ch.basic_publish(msg.exchange, msg.routing_key, msg.body, msg.properties)


def drain_rate(broker: Any, backlog: int, prefetch: int = 200) -> dict[str, Any]:
    """Build a backlog with the inventory stopped, start it, and time the drain."""
    cfg = LabConfig(prefetch=prefetch, initial_stock=PLENTY, log_level="WARNING")
    with Lab(broker, cfg) as lab:
        lab.stop("inventory")
        _publish_backlog(lab.amqp_url, backlog)
        wait_until(lambda: amqp.depth(lab.amqp_url, topo.ORDER_PLACED) >= backlog, 60,
                   "backlog published")
        start = time.monotonic()
        lab.start_service("inventory", wait=False)
        wait_until(lambda: amqp.depth(lab.amqp_url, topo.ORDER_PLACED) == 0
                   and lab.services["inventory"].health(), 120 + backlog / 100, "drained")
        wall = time.monotonic() - start
        notes = wait_until(lambda: (lambda n: n if len(n) >= backlog else None)(
            lab.notifications()), 120, "all notified")
    decided = sorted(events.parse_timestamp(n["outcome_timestamp"]) for n in notes)
    span = (decided[-1] - decided[0]).total_seconds()
    return {"backlog": backlog, "prefetch": prefetch,
            "drain_rate_msg_s": round((len(decided) - 1) / span, 1) if span else None,
            "time_to_empty_s_incl_startup": round(wall, 2)}


def steady_latency(broker: Any, orders: int = 1000, rate: float = 100.0) -> dict[str, Any]:
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


def run_bench(broker: Any, *, backlog: int = 5000, out: str | Path = "runs") -> dict[str, Any]:
    """Run every measurement and write bench.json into a run folder."""
    floor = raw_confirm_floor(broker.amqp_url)
    report = {
        "broker": {"provider": broker.provider, "version": broker.version()},
        "raw_pika_confirm_each_msg_s": round(floor, 1),
        "drain": drain_rate(broker, backlog),
        **steady_latency(broker),
    }
    rate = report["drain"]["drain_rate_msg_s"] or 0
    report["drain_vs_floor"] = round(rate / floor, 2) if floor else None
    folder = run_folder(out, "bench")
    (folder / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    report["run_dir"] = str(folder)
    return report


def describe(report: dict[str, Any]) -> str:
    """A short text summary of a bench report."""
    d = report["drain"]
    lat = report["latency_ms"]["end_to_end"]
    verdict = "above" if (report["drain_vs_floor"] or 0) >= 1 else "BELOW"
    return "\n".join([
        f"broker: {report['broker']['provider']} {report['broker']['version']}",
        f"raw pika, one confirm at a time: {report['raw_pika_confirm_each_msg_s']:.0f} msg/s",
        f"inventory drain ({d['backlog']} orders, prefetch {d['prefetch']}): "
        f"{d['drain_rate_msg_s']} msg/s = {report['drain_vs_floor']}x the floor ({verdict})",
        f"end-to-end latency at {report['steady_rate_orders_s']:.0f} orders/s: "
        f"p50 {lat['p50']} ms, p99 {lat['p99']} ms",
        f"HTTP accept rate (8 clients, flat out): {report['http_accept_rate_orders_s']} orders/s",
        f"written to {report['run_dir']}/bench.json",
    ])
