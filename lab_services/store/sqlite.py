"""SQLite stores: the connection handling, and stock with its reservation ledger and outcomes.

Each thread gets its own connection (the AMQP I/O thread writes, HTTP threads read). The
journal is WAL with a busy timeout, so several processes (competing consumers) can share a
file. `synchronous=FULL`, the default, makes a commit survive a power cut, as the broker's
confirm does; `NORMAL` (SQLITE_SYNCHRONOUS) survives a process crash only.

The reservation ledger records every reservation ever made, one row per (order, line).
Stock taken twice for one order is therefore visible after the fact, whatever the
idempotency mode: that is how the lab *measures* double reservations.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lab_services.retry import backoff_s
from lab_services.store.protocol import Outcome, lines_wanted

log = logging.getLogger(__name__)

# How long a new connection keeps asking for WAL while another process holds the file.
WAL_SWITCH_TIMEOUT_S = 30.0

def _switch_to_wal(conn: sqlite3.Connection, path: str) -> None:
    """Put the file in WAL mode, waiting while another process holds it.

    Switching a new file (still in rollback-journal mode) out of that mode while another
    connection reads or writes it fails at once with "database is locked": SQLite does not
    call the busy handler there. Competing inventories started together open one new file
    at the same moment, and one of them crashed on it. Once the file is WAL, the switch is
    a no-op that never waits.
    """
    deadline = time.monotonic() + WAL_SWITCH_TIMEOUT_S
    failures = 0
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            failures += 1
            if failures == 1:
                log.info("%s is locked by another process; waiting to switch it to WAL", path)
            time.sleep(backoff_s(failures, initial=0.005, cap=0.1))


class SqliteStore:
    """Thread-local SQLite connections on one database file, with a schema."""

    schema = ""

    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be FULL or NORMAL, not {synchronous!r}")
        self.synchronous = synchronous
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
            _switch_to_wal(conn, self.path)
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
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
        if depth == 0:
            # Threads of one process queue here instead of in SQLite's busy handler, which
            # sleeps 1, 2, 5 ... 100 ms between tries: under concurrent requests those
            # sleeps, not the work, set the latency (measured: p99 1 s, now 0.15 s).
            with _writer_lock(self.path):
                yield from self._transaction(db, 0)
        else:
            yield from self._transaction(db, depth)

    def _transaction(self, db: sqlite3.Connection, depth: int) -> Iterator[sqlite3.Connection]:
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
        try:
            db.execute(commit)
        except BaseException:
            # A failed COMMIT (disk full, I/O error) leaves the transaction open, and every
            # later BEGIN would fail: roll back so the next batch starts clean.
            with contextlib.suppress(sqlite3.Error):
                db.execute(rollback)
                if depth:
                    db.execute(commit)
            raise


_writer_locks: dict[str, threading.RLock] = {}
_writer_locks_guard = threading.Lock()


def _writer_lock(path: str) -> threading.RLock:
    """The one in-process lock for writing to a database file."""
    with _writer_locks_guard:
        lock = _writer_locks.get(path)
        if lock is None:
            lock = _writer_locks[path] = threading.RLock()
        return lock


DELIVERIES_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    key TEXT PRIMARY KEY, count INTEGER NOT NULL, updated_at REAL NOT NULL);
"""


class DeliveryCounts(SqliteStore):
    """How often each message was redelivered without being settled (the poison guard)."""

    schema = DELIVERIES_SCHEMA

    def bump(self, key: str) -> int:
        """Count one more redelivery of a message, committed at once; return the count."""
        with self.transaction() as db:
            db.execute("INSERT INTO deliveries(key, count, updated_at) VALUES (?, 1, ?)"
                       " ON CONFLICT(key) DO UPDATE SET count = count + 1,"
                       " updated_at = excluded.updated_at", (key, time.time()))
            return db.execute("SELECT count FROM deliveries WHERE key = ?",
                              (key,)).fetchone()[0]

    def forget(self, key: str) -> None:
        """The message was settled: drop its count."""
        with self.transaction() as db:
            db.execute("DELETE FROM deliveries WHERE key = ?", (key,))


class _BurstWrites:
    """The inventory's writes in one outermost transaction, kept in memory until its commit.

    The transaction holds SQLite's write lock from BEGIN IMMEDIATE on, so the stock read
    once per item stays true for the whole burst: reservations are checked against it in
    memory, and the burst's stock updates, ledger rows and outcomes are written with one
    `executemany` each just before COMMIT, instead of five to eight statements per order.
    A nested transaction (one order of the burst) is a mark to roll back to.
    """

    def __init__(self) -> None:
        self.stock: dict[str, int | None] = {}  # item -> stock read at the first look
        self.taken: dict[str, int] = {}
        self.reservations: list[tuple[str, str, str, int]] = []
        self.outcomes: list[Outcome] = []
        self.latest: dict[str, Outcome] = {}

    def mark(self) -> tuple[dict[str, int], int, int]:
        """Where a nested transaction starts."""
        return dict(self.taken), len(self.reservations), len(self.outcomes)

    def roll_back_to(self, mark: tuple[dict[str, int], int, int]) -> None:
        """Forget what a failed nested transaction did."""
        self.taken, reservations, outcomes = mark
        del self.reservations[reservations:]
        if len(self.outcomes) > outcomes:
            del self.outcomes[outcomes:]
            self.latest = {o.order_id: o for o in self.outcomes}

    def write(self, db: sqlite3.Connection) -> None:
        """Write the burst in the open transaction (the caller commits)."""
        if self.taken:
            db.executemany("UPDATE stock SET stock = stock - ? WHERE item_id = ?",
                           [(qty, item_id) for item_id, qty in self.taken.items()])
        if self.reservations:
            db.executemany("INSERT INTO reservations(order_id, event_id, item_id, quantity)"
                           " VALUES (?, ?, ?, ?)", self.reservations)
        if self.outcomes:
            db.executemany(
                "INSERT INTO outcomes(order_id, reserved, reason, event) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(order_id) DO UPDATE SET times_processed = times_processed + 1,"
                " reserved = excluded.reserved, reason = excluded.reason,"
                " event = excluded.event",
                [(o.order_id, int(o.reserved), o.reason, o.body.decode())
                 for o in self.outcomes])


class SqliteInventoryStore(DeliveryCounts):
    """Stock, the reservation ledger, the outcome of each processed order, and the
    redelivery counts of its input queue, in one SQLite file (an `InventoryStore`)."""

    schema = DELIVERIES_SCHEMA + """
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

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction whose reservations and outcomes are written at its end.

        Nested, it is a savepoint kept in memory: a failing order rolls back alone.
        """
        burst = getattr(self._local, "burst", None)
        if burst is not None:
            mark = burst.mark()
            try:
                yield self.db()
            except BaseException:
                burst.roll_back_to(mark)
                raise
            return
        burst = self._local.burst = _BurstWrites()
        try:
            with super().transaction() as db:
                yield db
                burst.write(db)
        finally:
            self._local.burst = None

    def seed(self, catalogue: dict[str, tuple[str, int, float]]) -> None:
        """Insert catalogue items that are not there yet (existing stock is kept)."""
        with self.transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO stock(item_id, name, price, initial, stock)"
                " VALUES (?, ?, ?, ?, ?)",
                [(k, n, p, s, s) for k, (n, s, p) in catalogue.items()],
            )

    def outcome(self, order_id: str, db: sqlite3.Connection | None = None) -> Outcome | None:
        """The stored outcome of an order (this transaction's included), if it was processed."""
        burst = getattr(self._local, "burst", None)
        if burst is not None and order_id in burst.latest:
            return burst.latest[order_id]
        row = (db or self.db()).execute(
            "SELECT order_id, reserved, reason, event FROM outcomes WHERE order_id = ?",
            (order_id,)).fetchone()
        if row is None:
            return None
        return Outcome.stored(row["order_id"], bool(row["reserved"]), row["reason"],
                              row["event"])

    def try_reserve(
        self, db: sqlite3.Connection, order_id: str, event_id: str, lines: list[tuple[str, int]]
    ) -> str | None:
        """Reserve all lines or none, inside the caller's transaction; return why not, or None."""
        burst: _BurstWrites = self._local.burst  # only inside a transaction
        wanted = lines_wanted(lines)
        for item_id, qty in wanted.items():
            if item_id not in burst.stock:
                row = db.execute("SELECT stock FROM stock WHERE item_id = ?",
                                 (item_id,)).fetchone()
                burst.stock[item_id] = None if row is None else row["stock"]
            stock = burst.stock[item_id]
            if stock is None:
                return f"unknown item: {item_id}"
            have = stock - burst.taken.get(item_id, 0)
            if have < qty:
                return f"insufficient stock for {item_id}: wanted {qty}, have {have}"
        for item_id, qty in wanted.items():
            burst.taken[item_id] = burst.taken.get(item_id, 0) + qty
            burst.reservations.append((order_id, event_id, item_id, qty))
        return None

    def record_outcome(self, db: sqlite3.Connection, outcome: Outcome) -> None:
        """Store an order's outcome in the caller's transaction (counting repeats)."""
        burst: _BurstWrites = self._local.burst
        burst.outcomes.append(outcome)
        burst.latest[outcome.order_id] = outcome

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
