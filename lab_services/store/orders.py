"""The order service's SQLite store: orders, statuses, the outbox and idempotency keys."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from lab_services.store.sqlite import SqliteStore


class IdempotencyConflict(ValueError):
    """An Idempotency-Key that was used before with a different request body."""


class OrderStore(SqliteStore):
    """Orders, their status, the outbox of unsent events, and the idempotency keys seen.

    The outbox is the transactional-outbox pattern: an order and its OrderPlaced event
    commit in one transaction, and a relay publishes what is not yet marked sent. So an
    order is never stored without its event, nor announced without being stored.
    """

    schema = """
    CREATE TABLE IF NOT EXISTS orders (
        order_id TEXT PRIMARY KEY, body TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS statuses (
        order_id TEXT PRIMARY KEY, status TEXT NOT NULL, reason TEXT, updated_at TEXT);
    CREATE TABLE IF NOT EXISTS outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, order_id TEXT NOT NULL UNIQUE,
        event TEXT NOT NULL, sent_at REAL, attempts INTEGER NOT NULL DEFAULT 0);
    CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox(sent_at) WHERE sent_at IS NULL;
    CREATE TABLE IF NOT EXISTS idempotency (
        key TEXT PRIMARY KEY, request_hash TEXT NOT NULL, order_id TEXT NOT NULL,
        event TEXT NOT NULL);
    """

    def add(self, order: dict[str, Any]) -> None:
        """Record an accepted order (the direct design: its event was confirmed already)."""
        with self.transaction() as db:
            # A plain INSERT: an id taken meanwhile fails loudly instead of dropping the order.
            db.execute("INSERT INTO orders(order_id, body) VALUES (?, ?)",
                       (order["order_id"], json.dumps(order)))

    def accept(self, order_id: str, order_json: str, event: str,
               key: tuple[str, str] | None = None) -> int:
        """Store an order (as JSON), its unsent event and its (key, request hash) in one
        transaction.

        Returns the outbox seq. Raises sqlite3.IntegrityError if the key was taken meanwhile.
        """
        with self.transaction() as db:
            if key is not None:
                db.execute("INSERT INTO idempotency(key, request_hash, order_id, event)"
                           " VALUES (?, ?, ?, ?)", (key[0], key[1], order_id, event))
            db.execute("INSERT INTO orders(order_id, body) VALUES (?, ?)",
                       (order_id, order_json))
            cur = db.execute("INSERT INTO outbox(order_id, event) VALUES (?, ?)",
                             (order_id, event))
            return int(cur.lastrowid)

    def remember_key(self, key: str, request_hash: str, order_id: str, event: str) -> None:
        """Tie an Idempotency-Key to the order (and event) it created."""
        with self.transaction() as db:
            db.execute("INSERT INTO idempotency(key, request_hash, order_id, event)"
                       " VALUES (?, ?, ?, ?)", (key, request_hash, order_id, event))

    def recall_key(self, key: str, request_hash: str) -> tuple[str, str] | None:
        """The (order id, event) an Idempotency-Key made before, or None if it is new.

        Raises IdempotencyConflict if the key came with a different body.
        """
        row = self.db().execute("SELECT request_hash, order_id, event FROM idempotency"
                                " WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        if row["request_hash"] != request_hash:
            raise IdempotencyConflict(key)
        return row["order_id"], row["event"]

    def unsent(self, limit: int = 500) -> list[tuple[int, str, str]]:
        """Outbox rows not yet confirmed by the broker, oldest first: (seq, order id, event)."""
        rows = self.db().execute("SELECT seq, order_id, event FROM outbox WHERE sent_at IS NULL"
                                 " ORDER BY seq LIMIT ?", (limit,)).fetchall()
        return [(r["seq"], r["order_id"], r["event"]) for r in rows]

    def mark_sent(self, seqs: list[int]) -> None:
        """Record that the broker confirmed these outbox events."""
        if not seqs:
            return
        with self.transaction() as db:
            db.executemany("UPDATE outbox SET sent_at = ? WHERE seq = ? AND sent_at IS NULL",
                           [(time.time(), s) for s in seqs])

    def is_sent(self, order_id: str) -> bool:
        """True unless the order's event still waits in the outbox."""
        row = self.db().execute("SELECT sent_at FROM outbox WHERE order_id = ?",
                                (order_id,)).fetchone()
        return row is None or row["sent_at"] is not None

    def outbox_backlog(self) -> int:
        """How many events wait in the outbox."""
        return self.db().execute("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL"
                                 ).fetchone()[0]

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
