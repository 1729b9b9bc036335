"""The intake floor: the least a durable `POST /order` must do, on the lab's own HTTP stack.

Flask on waitress, as the lab's order service, with the same number of threads. Each
request, written plainly: parse the JSON body, commit the order in SQLite (WAL, the same
`synchronous` as the lab, so one fsync per request; one writer at a time, as the lab's
stores do within a process), publish its OrderPlaced event with a publisher confirm on the
thread's own blocking channel (mandatory, persistent), and answer 201. No validation
beyond JSON, no idempotency keys, no outbox, no group commit: what is left is what every
durable intake pays. `python -m harness bench` runs it as a process of its own beside the
lab's order service, in the same run, and drives them with wrk in turn, shape by shape.

Run by hand: `python -m harness.bench.intake_floor --amqp-url URL --port N --store PATH`.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pika
import requests
from flask import Flask, jsonify, request

from harness.bench import topology_vhost
from harness.bench.floor import SYNCHRONOUS
from harness.bench.intake import non_2xx_in_any_run, status_mix
from harness.brokers import Broker
from harness.ports import free_ports, release_ports
from harness.waiting import wait_until
from lab_services import topology as topo
from lab_services.settings import load

INTAKE_FLOOR_TARGET = 0.8  # the lab's intake (2xx/s) as a fraction of the floor's (issue 21)
INTAKE_FLOOR_CONNECTIONS = ("1", "4")  # ... at these connection counts
SCALING_TARGET = 3.0  # the lab's intake with 4 connections at least this times with 1


def make_app(amqp_url: str, store: str, synchronous: str = "FULL") -> Flask:
    """The floor's app: POST /order (store, publish with a confirm, answer) and GET /health."""
    if synchronous not in SYNCHRONOUS:
        raise ValueError(f"synchronous must be one of {SYNCHRONOUS}, not {synchronous!r}")
    local = threading.local()
    writer = threading.Lock()
    setup = sqlite3.connect(store, isolation_level=None)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE IF NOT EXISTS orders (order_id TEXT PRIMARY KEY,"
                  " body TEXT NOT NULL)")
    setup.close()

    def db() -> sqlite3.Connection:
        conn = getattr(local, "db", None)
        if conn is None:
            conn = local.db = sqlite3.connect(store, isolation_level=None, timeout=30)
            conn.execute(f"PRAGMA synchronous={synchronous}")
        return conn

    def channel() -> Any:
        ch = getattr(local, "channel", None)
        if ch is None or ch.is_closed:
            ch = pika.BlockingConnection(pika.URLParameters(amqp_url)).channel()
            ch.confirm_delivery()
            local.channel = ch
        return ch

    app = Flask("intake-floor")

    @app.post("/order")
    def place_order():
        body = request.get_json()
        order_id = f"ORD-FLOOR-{uuid.uuid4().hex[:12]}"
        event_id = str(uuid.uuid4())
        event = json.dumps({"event_type": "OrderPlaced", "event_id": event_id,
                            "order_id": order_id, "user_id": body["user_id"],
                            "timestamp": datetime.now(UTC).isoformat(),
                            "payload": {"items": body["items"]}}).encode()
        conn = db()
        with writer:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO orders(order_id, body) VALUES (?, ?)",
                         (order_id, event))
            conn.execute("COMMIT")
        channel().basic_publish(
            topo.ORDER_EVENTS, topo.KEY_ORDER_PLACED, event, mandatory=True,
            properties=pika.BasicProperties(content_type="application/json", delivery_mode=2,
                                            message_id=event_id, correlation_id=order_id))
        return jsonify({"order_id": order_id, "status": "PENDING"}), 201

    @app.get("/health")
    def health():
        return jsonify({"service": "intake-floor", "status": "ok"})

    return app


def floor_threads() -> int:
    """The floor's waitress threads: the lab's default HTTP_THREADS, for a fair floor."""
    return load("order", {}).service.http_threads


@contextmanager
def running_floor(broker: Broker, folder: Path, synchronous: str = "FULL") -> Iterator[str]:
    """The floor as a process of its own in a vhost of its own; yields its base URL."""
    with topology_vhost(broker, "bench-intake") as url, \
            tempfile.TemporaryDirectory(prefix="bench-intake-floor-") as tmp:
        port = free_ports(1)[0]
        log_path = folder / "intake-floor.log"
        with open(log_path, "ab") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "harness.bench.intake_floor", "--amqp-url", url,
                 "--port", str(port), "--store", str(Path(tmp) / "floor.sqlite"),
                 "--threads", str(floor_threads()), "--synchronous", synchronous],
                stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_until(lambda: proc.poll() is not None or _answers(base + "/health"), 60,
                       "the intake floor listening")
            if proc.poll() is not None:
                raise RuntimeError(f"the intake floor exited {proc.returncode}; see "
                                   f"{log_path}")
            yield base
        finally:
            proc.kill()
            proc.wait(timeout=30)
            release_ports([port])


def intake_targets(it: dict[str, Any]) -> list[dict[str, Any]]:
    """The intake targets against the floor: measured value, target, met or not."""
    rows: list[dict[str, Any]] = []
    if "lab_vs_floor_by_connections" not in it:
        return rows
    for conns, ratio in it["lab_vs_floor_by_connections"].items():
        if conns in INTAKE_FLOOR_CONNECTIONS:
            rows.append({"target": f"intake >= {INTAKE_FLOOR_TARGET} of the intake floor "
                                   f"({conns} connection(s))", "value": ratio,
                         "met": ratio is not None and ratio >= INTAKE_FLOOR_TARGET})
    scaling = it["lab_4_vs_1"]
    rows.append({"target": f"intake with 4 connections >= {SCALING_TARGET}x with 1",
                 "value": scaling, "met": scaling is not None and scaling >= SCALING_TARGET})
    return rows


def describe_intake(it: dict[str, Any]) -> list[str]:
    """The intake comparison as text lines, one per connection count."""
    if "skipped" in it:
        return [f"HTTP intake against the intake floor: skipped ({it['skipped']})"]
    lines = [f"HTTP intake, each alone, in turn, median of {it['rounds']} run(s) each (wrk; "
             f"floor: plain Flask on waitress, {it['floor']['http_threads']} threads, one "
             f"fsync and one confirm per order):"]
    for a, b in zip(it["lab"]["runs"], it["floor"]["runs"], strict=True):
        conns = str(a["connections"])
        lines.append(f"  {conns:>2} connection(s): lab {a['ok_2xx_s']} 2xx/s [{status_mix(a)}]"
                     f", floor {b['ok_2xx_s']} 2xx/s [{status_mix(b)}] -> "
                     f"{it['lab_vs_floor_by_connections'][conns]} of the floor; lab p99 "
                     f"{a['latency_ms']['p99']} ms")
    for side in ("floor", "lab"):
        bad = non_2xx_in_any_run(it[side])
        if bad:
            lines.append(f"  {side}: {bad}")
    lines.append(f"  lab with 4 connections / with 1: {it['lab_4_vs_1']}x; group commit: "
                 f"{it['lab'].get('grouped_orders')} orders in "
                 f"{it['lab'].get('group_commits')} transactions")
    return lines


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def main(argv: list[str] | None = None) -> None:
    """Serve the floor with waitress until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--amqp-url", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--store", required=True)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--synchronous", choices=SYNCHRONOUS, default="FULL")
    args = parser.parse_args(argv)
    from waitress import serve

    serve(make_app(args.amqp_url, args.store, args.synchronous), host="127.0.0.1",
          port=args.port, threads=args.threads, connection_limit=1000, ident="intake-floor")


if __name__ == "__main__":
    main()
