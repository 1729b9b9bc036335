"""The inventory's store on PostgreSQL, for competing inventories on more than one host.

`STORE_URL=postgresql://...` selects it. It implements `protocol.InventoryStore` with its own
SQL; what differs from SQLite is how concurrent consumers are kept apart:
- the processed-order check takes a transaction-scoped advisory lock on the order id, so
  two inventories handed the same order (a redelivery racing the original) serialise, and
  the second one finds the first one's stored outcome;
- a reservation locks its stock rows (`SELECT ... FOR UPDATE`, in item order, so two
  orders never deadlock) before checking and taking the stock, all or nothing;
- the redelivery counts live in the same database, so every inventory sees them.
Nested transactions are savepoints (psycopg does that), as in the SQLite store.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row

from lab_services.store.protocol import Outcome, lines_wanted

# Several inventories may start at once: this lock lets one create the schema at a time.
SCHEMA_LOCK = 7140001

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS stock (
        item_id TEXT PRIMARY KEY, name TEXT NOT NULL, price DOUBLE PRECISION NOT NULL,
        initial INTEGER NOT NULL, stock INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS reservations (
        id BIGSERIAL PRIMARY KEY, order_id TEXT NOT NULL, event_id TEXT,
        item_id TEXT NOT NULL, quantity INTEGER NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS reservations_order ON reservations(order_id)",
    """CREATE TABLE IF NOT EXISTS outcomes (
        seq BIGSERIAL UNIQUE, order_id TEXT PRIMARY KEY, reserved BOOLEAN NOT NULL,
        reason TEXT, event TEXT NOT NULL, times_processed INTEGER NOT NULL DEFAULT 1)""",
    """CREATE TABLE IF NOT EXISTS deliveries (
        key TEXT PRIMARY KEY, count INTEGER NOT NULL, updated_at DOUBLE PRECISION NOT NULL)""",
)


class PostgresInventoryStore:
    """Stock, the reservation ledger, the outcomes and the delivery counts, in PostgreSQL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._local = threading.local()
        with self.transaction() as db:
            db.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            for statement in SCHEMA:
                db.execute(statement)

    def db(self) -> psycopg.Connection:
        """This thread's connection (autocommit outside `transaction`)."""
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = self._local.conn = psycopg.connect(self.url, autocommit=True,
                                                      row_factory=dict_row)
        return conn

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection]:
        """A transaction; nested, a savepoint."""
        db = self.db()
        with db.transaction():
            yield db

    def seed(self, catalogue: dict[str, tuple[str, int, float]]) -> None:
        """Insert catalogue items that are not there yet (existing stock is kept)."""
        with self.transaction() as db, db.cursor() as cur:
            cur.executemany(
                "INSERT INTO stock(item_id, name, price, initial, stock)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (item_id) DO NOTHING",
                [(k, n, p, s, s) for k, (n, s, p) in catalogue.items()])

    def outcome(self, order_id: str, db: psycopg.Connection | None = None) -> Outcome | None:
        """The stored outcome of an order; inside a transaction, also its lock."""
        if db is not None:
            db.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (order_id,))
        row = (db or self.db()).execute(
            "SELECT order_id, reserved, reason, event FROM outcomes WHERE order_id = %s",
            (order_id,)).fetchone()
        if row is None:
            return None
        return Outcome.stored(row["order_id"], row["reserved"], row["reason"], row["event"])

    def try_reserve(self, db: psycopg.Connection, order_id: str, event_id: str,
                    lines: list[tuple[str, int]]) -> str | None:
        """Reserve all lines or none, with the stock rows locked; return why not, or None."""
        wanted = lines_wanted(lines)
        have: dict[str, int] = {}
        for item_id in sorted(wanted):
            row = db.execute("SELECT stock FROM stock WHERE item_id = %s FOR UPDATE",
                             (item_id,)).fetchone()
            if row is None:
                return f"unknown item: {item_id}"
            have[item_id] = row["stock"]
        for item_id, qty in wanted.items():
            if have[item_id] < qty:
                return f"insufficient stock for {item_id}: wanted {qty}, have {have[item_id]}"
        with db.cursor() as cur:
            cur.executemany("UPDATE stock SET stock = stock - %s WHERE item_id = %s",
                            [(qty, item_id) for item_id, qty in wanted.items()])
            cur.executemany("INSERT INTO reservations(order_id, event_id, item_id, quantity)"
                            " VALUES (%s, %s, %s, %s)",
                            [(order_id, event_id, i, q) for i, q in wanted.items()])
        return None

    def record_outcome(self, db: psycopg.Connection, outcome: Outcome) -> None:
        """Store an order's outcome in the caller's transaction (counting repeats)."""
        db.execute(
            "INSERT INTO outcomes(order_id, reserved, reason, event) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (order_id) DO UPDATE SET"
            " times_processed = outcomes.times_processed + 1, reserved = excluded.reserved,"
            " reason = excluded.reason, event = excluded.event",
            (outcome.order_id, outcome.reserved, outcome.reason, outcome.body.decode()))

    def inventory(self) -> dict[str, dict[str, Any]]:
        """Current stock in the original lab's shape, plus the initial stock."""
        rows = self.db().execute("SELECT * FROM stock ORDER BY item_id").fetchall()
        return {r["item_id"]: {"name": r["name"], "stock": r["stock"], "price": r["price"],
                               "initial": r["initial"]} for r in rows}

    def processed_count(self) -> int:
        """How many distinct orders have a stored outcome."""
        return self.db().execute("SELECT COUNT(*) AS n FROM outcomes").fetchone()["n"]

    def outcomes(self) -> list[dict[str, Any]]:
        """Every stored outcome, in the order they were first stored."""
        return self.db().execute("SELECT order_id, reserved, reason, times_processed"
                                 " FROM outcomes ORDER BY seq").fetchall()

    def reservations(self) -> list[dict[str, Any]]:
        """Every row of the reservation ledger, oldest first."""
        return self.db().execute("SELECT * FROM reservations ORDER BY id").fetchall()

    def bump(self, key: str) -> int:
        """Count one more redelivery of a message, committed at once; return the count."""
        with self.transaction() as db:
            return db.execute(
                "INSERT INTO deliveries(key, count, updated_at) VALUES (%s, 1, %s)"
                " ON CONFLICT (key) DO UPDATE SET count = deliveries.count + 1,"
                " updated_at = excluded.updated_at RETURNING count",
                (key, time.time())).fetchone()["count"]

    def forget(self, key: str) -> None:
        """The message was settled: drop its count."""
        self.db().execute("DELETE FROM deliveries WHERE key = %s", (key,))
