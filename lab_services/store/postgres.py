"""The inventory's store on PostgreSQL, for competing inventories on more than one host.

`STORE_URL=postgresql://...` selects it. The interface is `InventoryStore`'s; what differs
is how concurrent consumers are kept apart:
- the processed-order check takes a transaction-scoped advisory lock on the order id, so
  two inventories handed the same order (a redelivery racing the original) serialise, and
  the second one finds the first one's stored outcome;
- a reservation locks its stock rows (`SELECT ... FOR UPDATE`, in item order, so two
  orders never deadlock) before checking and taking the stock, all or nothing.
Nested transactions are savepoints (psycopg does that), as in the SQLite store.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from lab_services.store import InventoryStore, Outcome

SCHEMA = """
CREATE TABLE IF NOT EXISTS stock (
    item_id TEXT PRIMARY KEY, name TEXT NOT NULL, price DOUBLE PRECISION NOT NULL,
    initial INTEGER NOT NULL, stock INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS reservations (
    id BIGSERIAL PRIMARY KEY, order_id TEXT NOT NULL, event_id TEXT,
    item_id TEXT NOT NULL, quantity INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS reservations_order ON reservations(order_id);
CREATE TABLE IF NOT EXISTS outcomes (
    seq BIGSERIAL UNIQUE, order_id TEXT PRIMARY KEY, reserved BOOLEAN NOT NULL, reason TEXT,
    event TEXT NOT NULL, times_processed INTEGER NOT NULL DEFAULT 1);
"""


class _Row(dict):
    """A row readable by column name and by position, like sqlite3.Row."""

    def __init__(self, names: list[str], values: tuple[Any, ...]) -> None:
        super().__init__(zip(names, values, strict=True))
        self._values = values

    def __getitem__(self, key: Any) -> Any:
        return self._values[key] if isinstance(key, int) else super().__getitem__(key)


def _row_factory(cursor: psycopg.Cursor) -> Any:
    names = [c.name for c in cursor.description or []]
    return lambda values: _Row(names, values)


class _Db:
    """A psycopg connection that takes the SQLite store's `?` placeholders."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Any = ()) -> psycopg.Cursor:
        return self.conn.execute(sql.replace("?", "%s"), params)

    def executemany(self, sql: str, rows: list[Any]) -> None:
        with self.conn.cursor() as cur:
            cur.executemany(sql.replace("?", "%s"), rows)


class PgInventoryStore(InventoryStore):
    """Stock, the reservation ledger and the outcomes, in PostgreSQL."""

    def __init__(self, url: str) -> None:  # noqa: D107 - the class docstring says it
        self.url = url
        self.path = url
        self.synchronous = "FULL"
        self._local = threading.local()
        with self.transaction() as db:
            # Several inventories may start at once: one creates the schema at a time.
            db.execute("SELECT pg_advisory_xact_lock(7140001)")
            for statement in filter(str.strip, SCHEMA.split(";")):
                db.execute(statement)

    def db(self) -> _Db:
        """This thread's connection."""
        db = getattr(self._local, "db", None)
        if db is None or db.conn.closed:
            conn = psycopg.connect(self.url, autocommit=True, row_factory=_row_factory)
            db = self._local.db = _Db(conn)
        return db

    @contextmanager
    def transaction(self) -> Iterator[_Db]:
        """A transaction; nested, a savepoint."""
        db = self.db()
        with db.conn.transaction():
            yield db

    def seed(self, catalogue: dict[str, tuple[str, int, float]]) -> None:
        """Insert catalogue items that are not there yet (existing stock is kept)."""
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO stock(item_id, name, price, initial, stock) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (item_id) DO NOTHING",
                [(k, n, p, s, s) for k, (n, s, p) in catalogue.items()])

    def outcome(self, order_id: str, db: Any = None) -> Outcome | None:
        """The stored outcome of an order; inside a transaction, also its lock."""
        if db is not None:
            db.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (order_id,))
        row = (db or self.db()).execute(
            "SELECT * FROM outcomes WHERE order_id = ?", (order_id,)).fetchone()
        if row is None:
            return None
        return Outcome(row["order_id"], bool(row["reserved"]), row["reason"],
                       json.loads(row["event"]))

    def try_reserve(self, db: Any, order_id: str, event_id: str,
                    lines: list[tuple[str, int]]) -> str | None:
        """Reserve all lines or none, with the stock rows locked; return why not, or None."""
        wanted: dict[str, int] = {}
        for item_id, qty in lines:
            wanted[item_id] = wanted.get(item_id, 0) + qty
        have: dict[str, int] = {}
        for item_id in sorted(wanted):
            row = db.execute("SELECT stock FROM stock WHERE item_id = ? FOR UPDATE",
                             (item_id,)).fetchone()
            if row is None:
                return f"unknown item: {item_id}"
            have[item_id] = row["stock"]
        for item_id, qty in wanted.items():
            if have[item_id] < qty:
                return f"insufficient stock for {item_id}: wanted {qty}, have {have[item_id]}"
        for item_id, qty in wanted.items():
            db.execute("UPDATE stock SET stock = stock - ? WHERE item_id = ?", (qty, item_id))
            db.execute("INSERT INTO reservations(order_id, event_id, item_id, quantity)"
                       " VALUES (?, ?, ?, ?)", (order_id, event_id, item_id, qty))
        return None

    def record_outcome(self, db: Any, outcome: Outcome) -> None:
        """Store an order's outcome in the caller's transaction (counting repeats)."""
        db.execute(
            "INSERT INTO outcomes(order_id, reserved, reason, event) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (order_id) DO UPDATE SET"
            " times_processed = outcomes.times_processed + 1, reserved = excluded.reserved,"
            " reason = excluded.reason, event = excluded.event",
            (outcome.order_id, outcome.reserved, outcome.reason, json.dumps(outcome.event)))

    def outcomes(self) -> list[dict[str, Any]]:
        """Every stored outcome, in the order they were first stored."""
        rows = self.db().execute("SELECT order_id, reserved, reason, times_processed"
                                 " FROM outcomes ORDER BY seq").fetchall()
        return [{k: r[k] for k in ("order_id", "reserved", "reason", "times_processed")}
                for r in rows]

    def reservations(self) -> list[dict[str, Any]]:
        """Every row of the reservation ledger, oldest first."""
        rows = self.db().execute("SELECT * FROM reservations ORDER BY id").fetchall()
        return [dict(r) for r in rows]
