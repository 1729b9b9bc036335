"""The intake floor: the least a durable `POST /order` must do, on the lab's own HTTP stack.

Flask on waitress, as the lab's order service, with the same number of threads. Each
request, written plainly: parse the JSON body, commit the order in SQLite (WAL, the same
`synchronous` as the lab, so one fsync per request; one writer at a time, as the lab's
stores do within a process), publish its OrderPlaced event with a publisher confirm on the
thread's own blocking channel (mandatory, persistent), and answer 201. No validation
beyond JSON, no idempotency keys, no outbox, no group commit: what is left is what every
durable intake pays. `python -m harness bench` runs it as a process of its own, beside the
lab, in the same run, and drives both with wrk.

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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pika
import requests
from flask import Flask, jsonify, request

from harness import amqp
from harness.bench.intake import SHAPES, run_wrk, write_script
from harness.brokers import Broker
from harness.brokers import management as admin
from harness.lab import with_vhost
from harness.load import LoadSpec, order_mix
from harness.ports import free_ports
from harness.waiting import wait_until
from lab_services import topology as topo
from lab_services.settings import load

SYNCHRONOUS = ("FULL", "NORMAL")


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


def floor_intake(broker: Broker, folder: Path, *, seconds: float = 5.0,
                 shapes: tuple[tuple[int, int], ...] = SHAPES,
                 synchronous: str = "FULL") -> dict[str, Any]:
    """The floor as a process of its own in a vhost of its own, driven by wrk per shape."""
    order = order_mix(LoadSpec(orders=1, seed=11, progress=False))[0]
    script = write_script(folder, order)
    threads = load("order", {}).service.http_threads  # the lab's default, for a fair floor
    vhost = f"bench-intake-{uuid.uuid4().hex[:8]}"
    admin.create_vhost(broker, vhost)
    runs = []
    try:
        url = with_vhost(broker.amqp_url, vhost)
        with amqp.channel(url) as ch:
            topo.build_topology("classic").declare(ch)
        with tempfile.TemporaryDirectory(prefix="bench-intake-floor-") as tmp:
            port = free_ports(1)[0]
            log_path = folder / "intake-floor.log"
            with open(log_path, "ab") as log_file:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "harness.bench.intake_floor", "--amqp-url", url,
                     "--port", str(port), "--store", str(Path(tmp) / "floor.sqlite"),
                     "--threads", str(threads), "--synchronous", synchronous],
                    stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            try:
                base = f"http://127.0.0.1:{port}"
                wait_until(lambda: proc.poll() is not None or _answers(base + "/health"), 60,
                           "the intake floor listening")
                if proc.poll() is not None:
                    raise RuntimeError(f"the intake floor exited {proc.returncode}; see "
                                       f"{log_path}")
                for t, c in shapes:
                    runs.append(run_wrk(base + "/order", script, threads=t, connections=c,
                                        seconds=seconds).to_dict())
            finally:
                proc.kill()
                proc.wait(timeout=30)
    finally:
        admin.delete_vhost(broker, vhost)
    return {"impl": "intake floor", "http_threads": threads, "sqlite_synchronous": synchronous,
            "runs": runs}


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
