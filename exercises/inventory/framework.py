"""Everything an inventory service needs except its message handler (see inventory.py).

It connects to the broker (and reconnects), declares the topology of docs/contract.md,
consumes `order_placed`, runs your `handle_order` inside one SQLite transaction per
message, publishes the outcome you return with publisher confirms, and only then acks the
message. A message you reject (InvalidMessage) is dead-lettered with your reason. It also
serves GET /health, /inventory and /reservations.

Settings (environment): AMQP_URL, PORT, DATA_DIR, INITIAL_STOCK (a number: every item).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pika
import pika.exceptions
from flask import Flask, jsonify

log = logging.getLogger("inventory")

CATALOGUE = {"item_1": 100, "item_2": 50, "item_3": 75, "item_4": 200, "item_5": 300}
DEAD_LETTERED = {"x-queue-type": "classic", "x-dead-letter-exchange": "dead_letters"}
PREFETCH = 20
TODO_EXIT_CODE = 3

SCHEMA = """
CREATE TABLE IF NOT EXISTS stock (item_id TEXT PRIMARY KEY, stock INTEGER NOT NULL,
                                  initial INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS reservations (id INTEGER PRIMARY KEY, order_id TEXT NOT NULL,
                                         item_id TEXT NOT NULL, quantity INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS processed (order_id TEXT PRIMARY KEY, reserved INTEGER NOT NULL,
                                      reason TEXT, outcome TEXT NOT NULL);
"""

Handler = Callable[[sqlite3.Connection, bytes], dict[str, Any]]


class InvalidMessage(ValueError):
    """Raise this from handle_order for a message that is not a valid OrderPlaced."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def now_iso() -> str:
    """The current time as ISO 8601 UTC, for event timestamps."""
    return datetime.now(UTC).isoformat()


def outcome_event(order: dict[str, Any], reason: str | None) -> dict[str, Any]:
    """The InventoryReserved (reason None) or InventoryFailed event that answers an order."""
    return {"event_id": str(uuid.uuid4()),
            "event_type": "InventoryFailed" if reason else "InventoryReserved",
            "timestamp": now_iso(), "order_id": order["order_id"], "items": order["items"],
            "reason": reason, "order_timestamp": order.get("timestamp")}


def open_db(path: str) -> sqlite3.Connection:
    """A connection to the store, with the schema and the initial stock in place."""
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(SCHEMA)
    initial = os.environ.get("INITIAL_STOCK", "")
    for item, stock in CATALOGUE.items():
        n = int(initial) if initial.isdigit() else stock
        conn.execute("INSERT OR IGNORE INTO stock VALUES (?, ?, ?)", (item, n, n))
    return conn


def declare(ch: Any) -> None:
    """The exchanges, queues and bindings of the contract, with the lab's arguments."""
    ch.exchange_declare("order_events", "topic", durable=True)
    ch.exchange_declare("inventory_events", "topic", durable=True)
    ch.exchange_declare("dead_letters", "fanout", durable=True)
    for queue in ("order_placed", "inventory_reserved", "inventory_failed", "order_status"):
        ch.queue_declare(queue, durable=True, arguments=DEAD_LETTERED)
    ch.queue_declare("dlq", durable=True, arguments={"x-queue-type": "classic"})
    ch.queue_bind("order_placed", "order_events", "order.placed")
    ch.queue_bind("inventory_reserved", "inventory_events", "inventory.reserved")
    ch.queue_bind("inventory_failed", "inventory_events", "inventory.failed")
    ch.queue_bind("order_status", "inventory_events", "inventory.*")
    ch.queue_bind("dlq", "dead_letters", "#")


def close_quietly(conn: pika.BlockingConnection | None) -> None:
    """Close a connection if it is still open (the broker may already have closed it)."""
    if conn is None or not conn.is_open:
        return
    try:
        conn.close()
    except (pika.exceptions.AMQPError, OSError) as exc:
        log.info("closing the old connection failed (%s); it is dropped", exc)


def check_written(handle: Handler) -> None:
    """Exit with a clear message if handle_order is still the unfilled TODO."""
    probe = open_db(":memory:")
    body = json.dumps({"event_id": "probe", "event_type": "OrderPlaced", "timestamp": now_iso(),
                       "order_id": "ORD-PROBE", "user_id": "probe", "total_amount": 1.0,
                       "items": [{"item_id": "item_1", "quantity": 1, "price": 1.0}]}).encode()
    try:
        probe.execute("BEGIN IMMEDIATE")
        handle(probe, body)
    except NotImplementedError as exc:
        print(f"inventory: handle_order is not written yet: {exc}\n"
              "Fill in the TODO in inventory.py (its docstring states the contract), then "
              "grade again.", file=sys.stderr, flush=True)
        raise SystemExit(TODO_EXIT_CODE) from None
    except Exception:
        pass  # a real handler may object to the probe; the real messages will tell
    finally:
        probe.close()


class Consumer:
    """Consumes order_placed; per message: your handler in a transaction, publish, ack."""

    def __init__(self, handle: Handler, db: sqlite3.Connection, amqp_url: str) -> None:
        self.handle, self.db, self.amqp_url = handle, db, amqp_url
        self.lock = threading.Lock()  # the HTTP threads read the same connection
        self.consuming = threading.Event()  # set while a connection consumes order_placed
        self.thread: threading.Thread | None = None
        self.stopped_by: str | None = None  # why the consumer thread ended, if it did

    def start(self) -> None:
        """Run the consumer on a thread of its own."""
        self.thread = threading.Thread(target=self.run_forever, name="consumer", daemon=True)
        self.thread.start()

    def healthy(self) -> tuple[bool, str]:
        """Whether the consumer thread runs and consumes; if not, why."""
        if self.thread is None or not self.thread.is_alive():
            return False, f"the consumer thread stopped: {self.stopped_by or 'not started'}"
        if not self.consuming.is_set():
            return False, "not connected to the broker (reconnecting)"
        return True, "consuming order_placed"

    def run_forever(self) -> None:
        """Consume until the process ends; reconnect (with a growing pause) on broker loss."""
        try:
            self._consume_with_reconnects()
        except BaseException as exc:
            self.stopped_by = f"{exc.__class__.__name__}: {exc}"[:300]
            log.exception("the consumer thread stopped; /health now answers 503")
            raise

    def _consume_with_reconnects(self) -> None:
        delay = 0.5
        while True:
            conn = None
            try:
                conn = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
                ch = conn.channel()
                declare(ch)
                ch.confirm_delivery()
                ch.basic_qos(prefetch_count=PREFETCH)
                ch.basic_consume("order_placed", self.on_message)
                log.info("consuming order_placed")
                self.consuming.set()
                delay = 0.5
                ch.start_consuming()
            except pika.exceptions.AMQPError as exc:
                log.warning("broker lost or publish refused (%s: %s); reconnecting in %.1f s",
                            exc.__class__.__name__, exc, delay)
            finally:
                self.consuming.clear()
                # Close the old connection before opening the next: after a nacked or
                # returned publish it is still open, and the broker would keep its
                # prefetched orders unacked (out of reach of the new connection) until it
                # noticed the socket was gone, minutes later.
                close_quietly(conn)
            time.sleep(delay)
            delay = min(delay * 2, 5)

    def on_message(self, ch: Any, method: Any, props: Any, body: bytes) -> None:
        """One message: handle it in a transaction, publish the outcome, then ack."""
        try:
            with self.lock:
                self.db.execute("BEGIN IMMEDIATE")
                try:
                    outcome = self.handle(self.db, body)
                    self.db.execute("COMMIT")
                except BaseException:
                    self.db.execute("ROLLBACK")
                    raise
        except InvalidMessage as exc:
            self.dead_letter(ch, method, props, body, exc.reason)
            return
        except Exception as exc:  # a bug in the handler: keep the message, say why
            log.exception("handle_order failed")
            self.dead_letter(ch, method, props, body,
                             f"handler failed: {exc.__class__.__name__}: {exc}"[:500])
            return
        reserved = outcome["event_type"] == "InventoryReserved"
        key = "inventory.reserved" if reserved else "inventory.failed"
        props = pika.BasicProperties(delivery_mode=2, content_type="application/json",
                                     message_id=str(outcome["event_id"])[:255],
                                     correlation_id=str(outcome["order_id"])[:255],
                                     type=outcome["event_type"])
        # The outcome is meant for two queues, and `mandatory` returns it only if it
        # reaches neither: with one of them deleted it would reach the other, be confirmed,
        # and never reach the first. So ask that both exist first: a missing one closes the
        # channel here, before anything is published, and the order comes back after the
        # reconnect (which declares the queue again).
        for queue in ("inventory_reserved" if reserved else "inventory_failed", "order_status"):
            ch.queue_declare(queue, passive=True)
        # Confirmed before the ack: a crash in between redelivers the order, and the
        # handler must then answer it again without reserving twice.
        ch.basic_publish("inventory_events", key, json.dumps(outcome).encode(), props,
                         mandatory=True)
        ch.basic_ack(method.delivery_tag)

    def dead_letter(self, ch: Any, method: Any, props: Any, body: bytes, reason: str) -> None:
        """Republish to dead_letters with the reason, confirmed, then ack the original."""
        headers = {"x-reject-reason": reason[:500], "x-original-exchange": method.exchange,
                   "x-original-routing-key": method.routing_key,
                   "x-original-queue": "order_placed", "x-attempts": 1}
        ch.basic_publish("dead_letters", method.routing_key or "order.placed", body,
                         pika.BasicProperties(delivery_mode=2, headers=headers,
                                              content_type=props.content_type))
        ch.basic_ack(method.delivery_tag)
        log.info("dead-lettered a message: %s", reason)


def create_app(consumer: Consumer) -> Flask:
    """GET /health, /inventory and /reservations."""
    app = Flask("inventory")

    def rows(sql: str) -> list[sqlite3.Row]:
        with consumer.lock:
            return consumer.db.execute(sql).fetchall()

    @app.get("/health")
    def health():
        ok, why = consumer.healthy()
        body = {"service": "inventory", "status": "ok" if ok else "unavailable",
                "pid": os.getpid(), "consumer": why}
        return jsonify(body), 200 if ok else 503

    @app.get("/inventory")
    def inventory():
        return jsonify({r["item_id"]: {"stock": r["stock"], "initial": r["initial"]}
                        for r in rows("SELECT * FROM stock ORDER BY item_id")})

    @app.get("/reservations")
    def reservations():
        ledger = rows("SELECT order_id, item_id, quantity FROM reservations ORDER BY id")
        outcomes = rows("SELECT order_id, reserved, reason FROM processed ORDER BY rowid")
        return jsonify({"reservations": [dict(r) for r in ledger],
                        "outcomes": [dict(r, reserved=bool(r["reserved"])) for r in outcomes]})

    return app


def run(handle: Handler) -> None:
    """Run the inventory service with your handler until the process is stopped."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("pika").setLevel(logging.WARNING)
    check_written(handle)
    data_dir = os.environ.get("DATA_DIR", ".")
    os.makedirs(data_dir, exist_ok=True)
    db = open_db(os.path.join(data_dir, "inventory.sqlite"))
    consumer = Consumer(handle, db, os.environ.get("AMQP_URL", "amqp://guest:guest@localhost/"))
    consumer.start()
    create_app(consumer).run(host="127.0.0.1", port=int(os.environ.get("PORT", "5002")),
                             threaded=True)
