"""The plain-pika floor: the inventory step written as fast as pika allows, for `bench`.

The same work as the lab's inventory, without the lab's abstractions: consume
`order_placed` (SelectConnection, prefetch 200), reserve stock in SQLite with ONE
transaction per read burst (WAL, with the same `synchronous` setting as the lab), publish each
outcome to `inventory_events` with pipelined publisher confirms, and ack the inputs with
`multiple=True` once their outputs are confirmed. Draining the same backlog on the same
broker in the same run, it is the yardstick the lab's drain is measured against.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pika
import pika.exceptions

from lab_services import topology as topo

SYNCHRONOUS = ("FULL", "NORMAL")  # the lab's SQLITE_SYNCHRONOUS choices

SCHEMA = """
CREATE TABLE IF NOT EXISTS stock (item_id TEXT PRIMARY KEY, stock INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS reservations (id INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id TEXT NOT NULL, event_id TEXT, item_id TEXT NOT NULL, quantity INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS reservations_order ON reservations(order_id);
CREATE TABLE IF NOT EXISTS outcomes (order_id TEXT PRIMARY KEY, reserved INTEGER NOT NULL,
    reason TEXT, event TEXT NOT NULL);
"""


@dataclass
class FloorResult:
    """What the floor drained, and how fast."""

    messages: int
    seconds: float
    bursts: int

    @property
    def rate(self) -> float:
        """Messages per second from the first delivery to the last ack."""
        return self.messages / self.seconds if self.seconds > 0 else 0.0


class FloorInventory:
    """One SelectConnection consumer: burst -> one transaction -> confirmed publishes -> ack."""

    def __init__(self, amqp_url: str, store: Path, expected: int, *, prefetch: int = 200,
                 synchronous: str = "FULL", stock: int = 10_000_000) -> None:
        if synchronous not in SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS}, not {synchronous!r}")
        self.params = pika.URLParameters(amqp_url)
        self.expected, self.prefetch = expected, prefetch
        self.db = sqlite3.connect(store, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={synchronous}")  # checked against SYNCHRONOUS
        self.db.executescript(SCHEMA)
        self.stock = stock
        self.conn: pika.SelectConnection | None = None
        self.ch: Any = None
        self.burst: list[tuple[int, bytes]] = []
        self.unconfirmed: deque[tuple[int, int]] = deque()  # (publish seq, input tag)
        self.seq = 0
        self.confirmed_upto = 0
        self.confirmed_singles: set[int] = set()
        self.acked = 0
        self.bursts = 0
        self.t_first: float | None = None
        self.t_last = 0.0
        self.error: BaseException | None = None

    # ---- connection setup, top to bottom like the protocol ------------------------------

    def run(self) -> FloorResult:
        """Drain `expected` messages and return the rate; raise if anything went wrong."""
        self.conn = pika.SelectConnection(self.params, on_open_callback=self.on_open,
                                          on_open_error_callback=self.on_fail,
                                          on_close_callback=self.on_closed)
        self.conn.ioloop.start()
        self.db.close()
        if self.error is not None:
            raise RuntimeError(f"the floor consumer failed: {self.error!r}")
        return FloorResult(self.acked, self.t_last - (self.t_first or self.t_last), self.bursts)

    def on_open(self, conn: pika.SelectConnection) -> None:
        """Open a channel."""
        conn.channel(on_open_callback=self.on_channel)

    def on_channel(self, ch: Any) -> None:
        """Confirms on, then QoS."""
        self.ch = ch
        ch.confirm_delivery(self.on_confirm, callback=lambda _f: ch.basic_qos(
            prefetch_count=self.prefetch, callback=self.on_qos))

    def on_qos(self, _frame: Any) -> None:
        """Start consuming."""
        self.ch.basic_consume(topo.QUEUE_ORDER_PLACED, self.on_message)

    def on_fail(self, _conn: Any, exc: BaseException) -> None:
        """The connection could not open."""
        self.error = exc
        self.conn.ioloop.stop()

    def on_closed(self, _conn: Any, reason: BaseException) -> None:
        """The connection closed: done, or failed."""
        if self.acked < self.expected and self.error is None:
            self.error = reason
        self.conn.ioloop.stop()

    # ---- the work -----------------------------------------------------------------------

    def on_message(self, _ch: Any, method: Any, _props: Any, body: bytes) -> None:
        """Collect the burst; it is handled once pika has dispatched every frame it read."""
        if self.t_first is None:
            self.t_first = time.perf_counter()
        if not self.burst:
            self.conn.ioloop.call_later(0, self.flush)
        self.burst.append((method.delivery_tag, body))

    def flush(self) -> None:
        """One transaction for the burst, then one confirmed publish per input."""
        burst, self.burst = self.burst, []
        self.bursts += 1
        outs = []
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        for tag, body in burst:
            order = json.loads(body)
            order_id = order["order_id"]
            done = db.execute("SELECT event FROM outcomes WHERE order_id = ?",
                              (order_id,)).fetchone()
            if done:  # a redelivery: publish the stored outcome again
                outs.append((tag, done[0].encode()))
                continue
            reason = self.reserve(order)
            event = {"event_id": str(uuid.uuid4()),
                     "event_type": "InventoryFailed" if reason else "InventoryReserved",
                     "timestamp": datetime.now(UTC).isoformat(), "order_id": order_id,
                     "items": order["items"], "reason": reason,
                     "order_timestamp": order["timestamp"]}
            text = json.dumps(event, separators=(",", ":"))
            db.execute("INSERT INTO outcomes(order_id, reserved, reason, event) "
                       "VALUES (?, ?, ?, ?)", (order_id, int(reason is None), reason, text))
            outs.append((tag, text.encode()))
        db.execute("COMMIT")  # commit before publishing: a crash then repeats, never loses
        for tag, body in outs:
            reserved = b'"InventoryReserved"' in body
            key = topo.KEY_INVENTORY_RESERVED if reserved else topo.KEY_INVENTORY_FAILED
            self.ch.basic_publish(topo.INVENTORY_EVENTS, key, body, pika.BasicProperties(
                content_type="application/json", delivery_mode=2))
            self.seq += 1
            self.unconfirmed.append((self.seq, tag))

    def reserve(self, order: dict[str, Any]) -> str | None:
        """Reserve every line or none; return why not, or None."""
        db = self.db
        lines = [(i["item_id"], int(i["quantity"])) for i in order["items"]]
        for item_id, qty in lines:
            row = db.execute("SELECT stock FROM stock WHERE item_id = ?", (item_id,)).fetchone()
            if row is None:
                db.execute("INSERT INTO stock(item_id, stock) VALUES (?, ?)",
                           (item_id, self.stock))
            elif row[0] < qty:
                return f"insufficient stock for {item_id}"
        for item_id, qty in lines:
            db.execute("UPDATE stock SET stock = stock - ? WHERE item_id = ?", (qty, item_id))
            db.execute("INSERT INTO reservations(order_id, event_id, item_id, quantity) "
                       "VALUES (?, ?, ?, ?)", (order["order_id"], order["event_id"], item_id,
                                               qty))
        return None

    def on_confirm(self, frame: Any) -> None:
        """Ack inputs up to the last one whose output is confirmed (multiple=True)."""
        m = frame.method
        if isinstance(m, pika.spec.Basic.Nack):
            self.error = RuntimeError(f"broker nacked publish {m.delivery_tag}")
            self.conn.close()
            return
        if m.multiple:
            self.confirmed_upto = max(self.confirmed_upto, m.delivery_tag)
        else:  # confirms may come out of order: keep singles until the prefix reaches them
            self.confirmed_singles.add(m.delivery_tag)
        last_tag, n = None, 0
        while self.unconfirmed:
            seq, tag = self.unconfirmed[0]
            if seq > self.confirmed_upto and seq not in self.confirmed_singles:
                break
            self.confirmed_singles.discard(seq)
            self.unconfirmed.popleft()
            last_tag, n = tag, n + 1
        if last_tag is not None:
            # Inputs are delivered, and outputs published, in the same order: a confirmed
            # prefix of outputs is a contiguous prefix of inputs.
            self.ch.basic_ack(last_tag, multiple=True)
            self.acked += n
            self.t_last = time.perf_counter()
        if self.acked >= self.expected:
            self.conn.close()


def run_floor(amqp_url: str, store: Path, expected: int, prefetch: int = 200,
              synchronous: str = "FULL") -> FloorResult:
    """Drain `expected` OrderPlaced messages from order_placed with the plain-pika design."""
    return FloorInventory(amqp_url, store, expected, prefetch=prefetch,
                          synchronous=synchronous).run()
