"""SQLite stores: orders, stock with its reservation ledger and outcomes, notifications.

Each thread gets its own connection (the AMQP I/O thread writes, HTTP threads read). WAL
with synchronous=NORMAL survives a process crash, which is the fault the lab injects; it
does not promise to survive a power cut.

The reservation ledger records every reservation ever made, one row per (order, line).
Stock taken twice for one order is therefore visible after the fact, whatever the
idempotency mode: that is how the lab *measures* double reservations.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The original lab's catalogue: item -> (name, starting stock, price).
DEFAULT_CATALOGUE: dict[str, tuple[str, int, float]] = {
    "item_1": ("Burger", 100, 10.0),
    "item_2": ("Pizza", 50, 15.0),
    "item_3": ("Salad", 75, 8.0),
    "item_4": ("Fries", 200, 4.5),
    "item_5": ("Soda", 300, 2.0),
}


def catalogue_from_env() -> dict[str, tuple[str, int, float]]:
    """The catalogue, with stock overridden by INITIAL_STOCK (e.g. '500' or 'item_1=5,item_2=0')."""
    catalogue = dict(DEFAULT_CATALOGUE)
    spec = os.environ.get("INITIAL_STOCK", "").strip()
    if not spec:
        return catalogue
    if "=" not in spec:
        return {k: (name, int(spec), price) for k, (name, _s, price) in catalogue.items()}
    for part in spec.split(","):
        item_id, _, stock = part.partition("=")
        name, _old, price = catalogue.get(item_id.strip(), (item_id.strip(), 0, 1.0))
        catalogue[item_id.strip()] = (name, int(stock), price)
    return catalogue


class SqliteStore:
    """Thread-local SQLite connections on one database file, with a schema."""

    schema = ""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        # executescript commits on its own, so the schema is not wrapped in transaction().
        self.db().executescript(self.schema)

    def db(self) -> sqlite3.Connection:
        """This thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: all of it commits, or none of it.

        Nested inside another transaction of this thread it becomes a savepoint, so a
        consumer can commit a whole batch of messages at once while one failing message
        still rolls back alone.
        """
        db = self.db()
        depth = getattr(self._local, "depth", 0)
        begin, commit, rollback = (
            ("BEGIN IMMEDIATE", "COMMIT", "ROLLBACK") if depth == 0
            else (f"SAVEPOINT sp{depth}", f"RELEASE sp{depth}", f"ROLLBACK TO sp{depth}"))
        db.execute(begin)
        self._local.depth = depth + 1
        try:
            yield db
        except BaseException:
            db.execute(rollback)
            if depth:
                db.execute(commit)  # a savepoint stays open after ROLLBACK TO
            raise
        finally:
            self._local.depth = depth
        db.execute(commit)


@dataclass(frozen=True)
class Outcome:
    """What the inventory decided for an order."""

    order_id: str
    reserved: bool
    reason: str | None
    event: dict[str, Any]


class InventoryStore(SqliteStore):
    """Stock, the reservation ledger, and the stored outcome of each processed order."""

    schema = """
    CREATE TABLE IF NOT EXISTS stock (
        item_id TEXT PRIMARY KEY, name TEXT NOT NULL, price REAL NOT NULL,
        initial INTEGER NOT NULL, stock INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS reservations (
        id INTEGER PRIMARY KEY AUTOINCREMENT, order_id TEXT NOT NULL, event_id TEXT,
        item_id TEXT NOT NULL, quantity INTEGER NOT NULL);
    CREATE INDEX IF NOT EXISTS reservations_order ON reservations(order_id);
    CREATE TABLE IF NOT EXISTS outcomes (
        order_id TEXT PRIMARY KEY, reserved INTEGER NOT NULL, reason TEXT,
        event TEXT NOT NULL, times_processed INTEGER NOT NULL DEFAULT 1);
    """

    def seed(self, catalogue: dict[str, tuple[str, int, float]]) -> None:
        """Insert catalogue items that are not there yet (existing stock is kept)."""
        with self.transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO stock(item_id, name, price, initial, stock)"
                " VALUES (?, ?, ?, ?, ?)",
                [(k, n, p, s, s) for k, (n, s, p) in catalogue.items()],
            )

    def outcome(self, order_id: str, db: sqlite3.Connection | None = None) -> Outcome | None:
        """The stored outcome of an order, if it was processed."""
        row = (db or self.db()).execute(
            "SELECT * FROM outcomes WHERE order_id = ?", (order_id,)
        ).fetchone()
        if row is None:
            return None
        return Outcome(row["order_id"], bool(row["reserved"]), row["reason"],
                       json.loads(row["event"]))

    def try_reserve(
        self, db: sqlite3.Connection, order_id: str, event_id: str, lines: list[tuple[str, int]]
    ) -> str | None:
        """Reserve all lines or none, inside the caller's transaction; return why not, or None."""
        wanted: dict[str, int] = {}
        for item_id, qty in lines:
            wanted[item_id] = wanted.get(item_id, 0) + qty
        for item_id, qty in wanted.items():
            row = db.execute("SELECT stock FROM stock WHERE item_id = ?", (item_id,)).fetchone()
            if row is None:
                return f"unknown item: {item_id}"
            if row["stock"] < qty:
                return f"insufficient stock for {item_id}: wanted {qty}, have {row['stock']}"
        for item_id, qty in wanted.items():
            db.execute("UPDATE stock SET stock = stock - ? WHERE item_id = ?", (qty, item_id))
            db.execute(
                "INSERT INTO reservations(order_id, event_id, item_id, quantity)"
                " VALUES (?, ?, ?, ?)",
                (order_id, event_id, item_id, qty),
            )
        return None

    def record_outcome(self, db: sqlite3.Connection, outcome: Outcome) -> None:
        """Store an order's outcome in the caller's transaction (counting repeats)."""
        db.execute(
            "INSERT INTO outcomes(order_id, reserved, reason, event) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(order_id) DO UPDATE SET times_processed = times_processed + 1,"
            " reserved = excluded.reserved, reason = excluded.reason, event = excluded.event",
            (outcome.order_id, int(outcome.reserved), outcome.reason, json.dumps(outcome.event)),
        )

    def inventory(self) -> dict[str, dict[str, Any]]:
        """Current stock in the original lab's shape, plus the initial stock."""
        rows = self.db().execute("SELECT * FROM stock ORDER BY item_id").fetchall()
        return {
            r["item_id"]: {"name": r["name"], "stock": r["stock"], "price": r["price"],
                           "initial": r["initial"]}
            for r in rows
        }

    def processed_count(self) -> int:
        """How many distinct orders have a stored outcome."""
        return self.db().execute("SELECT COUNT(*) FROM outcomes").fetchone()[0]

    def reservations(self) -> list[dict[str, Any]]:
        """Every row of the reservation ledger, oldest first."""
        rows = self.db().execute("SELECT * FROM reservations ORDER BY id").fetchall()
        return [dict(r) for r in rows]

    def outcomes(self) -> list[dict[str, Any]]:
        """Every stored outcome."""
        rows = self.db().execute("SELECT order_id, reserved, reason, times_processed"
                                 " FROM outcomes ORDER BY rowid").fetchall()
        return [dict(r, reserved=bool(r["reserved"])) for r in rows]


class OrderStore(SqliteStore):
    """Orders the order service accepted, and the status the inventory reported for each."""

    schema = """
    CREATE TABLE IF NOT EXISTS orders (
        order_id TEXT PRIMARY KEY, body TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS statuses (
        order_id TEXT PRIMARY KEY, status TEXT NOT NULL, reason TEXT, updated_at TEXT);
    """

    def add(self, order: dict[str, Any]) -> None:
        """Record an accepted order."""
        with self.transaction() as db:
            db.execute("INSERT INTO orders(order_id, body) VALUES (?, ?)",
                       (order["order_id"], json.dumps(order)))

    def set_status(self, order_id: str, status: str, reason: str | None, at: str) -> None:
        """Record the inventory's verdict for an order (it may arrive before the order row)."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO statuses(order_id, status, reason, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(order_id) DO UPDATE SET status = excluded.status,"
                " reason = excluded.reason, updated_at = excluded.updated_at",
                (order_id, status, reason, at),
            )

    def get(self, order_id: str) -> dict[str, Any] | None:
        """An order with its current status, or None."""
        row = self.db().execute(
            "SELECT o.body, s.status, s.reason, s.updated_at FROM orders o"
            " LEFT JOIN statuses s USING(order_id) WHERE o.order_id = ?", (order_id,)
        ).fetchone()
        return _order_view(row) if row else None

    def count(self) -> int:
        """How many orders were accepted."""
        return self.db().execute("SELECT COUNT(*) FROM orders").fetchone()[0]

    def all(self) -> list[dict[str, Any]]:
        """Every order with its status, oldest first."""
        rows = self.db().execute(
            "SELECT o.body, s.status, s.reason, s.updated_at FROM orders o"
            " LEFT JOIN statuses s USING(order_id) ORDER BY o.rowid"  # rowid: insertion order
        ).fetchall()
        return [_order_view(r) for r in rows]


def _order_view(row: sqlite3.Row) -> dict[str, Any]:
    order = json.loads(row["body"])
    if row["status"]:
        order["status"] = row["status"]
        order["reason"] = row["reason"]
        order["updated_at"] = row["updated_at"]
    return order


class NotificationStore(SqliteStore):
    """One notification per order, oldest first; repeats are counted, not stored twice."""

    schema = """
    CREATE TABLE IF NOT EXISTS notifications (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, order_id TEXT NOT NULL UNIQUE,
        body TEXT NOT NULL, duplicates_ignored INTEGER NOT NULL DEFAULT 0);
    """

    def add(self, notification: dict[str, Any]) -> bool:
        """Record a notification; return False (and count it) if the order had one already."""
        with self.transaction() as db:
            seen = db.execute("SELECT 1 FROM notifications WHERE order_id = ?",
                              (notification["order_id"],)).fetchone()
            if seen:
                db.execute("UPDATE notifications SET duplicates_ignored = duplicates_ignored + 1"
                           " WHERE order_id = ?", (notification["order_id"],))
                return False
            db.execute("INSERT INTO notifications(order_id, body) VALUES (?, ?)",
                       (notification["order_id"], json.dumps(notification)))
            return True

    def all(self) -> list[dict[str, Any]]:
        """Every notification, oldest first."""
        rows = self.db().execute("SELECT body FROM notifications ORDER BY seq").fetchall()
        return [json.loads(r["body"]) for r in rows]

    def count(self) -> int:
        """How many orders were notified."""
        return self.db().execute("SELECT COUNT(*) FROM notifications").fetchone()[0]

    def duplicates_ignored(self) -> int:
        """How many repeated events were recognised and not notified again."""
        return self.db().execute(
            "SELECT COALESCE(SUM(duplicates_ignored), 0) FROM notifications").fetchone()[0]
