"""Judge an inventory handler `handle(order, db)` under a crash at every point of it.

A workbench for notebook 03. Orders wait in a real queue; a consumer process, forked afresh for
every "life", takes one order at a time with `basic_get` and calls the handler (which reserves
stock in SQLite and commits). On an order's first delivery the life dies with `os._exit` at
one crash point: right after the handler's 1st commit, its 2nd, ... or after it returned (between
its last commit and the ack). The orders take the points in turn, so a handler that commits
twice is crashed between its two commits too. The broker delivers that order again to the next
life. Forking gives every life the memory the handler had before any life ran, exactly as a
restarted process would: what survives a crash is what the handler committed, nothing else.
"""

from __future__ import annotations

import json
import os
import sqlite3
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika

Handler = Callable[[dict[str, Any], sqlite3.Connection], Any]

SCHEMA = """
CREATE TABLE IF NOT EXISTS stock (item_id TEXT PRIMARY KEY, qty INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS reservations (order_id TEXT NOT NULL, item_id TEXT NOT NULL,
                                         quantity INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS processed (order_id TEXT PRIMARY KEY);
"""
CRASHED = 75  # the exit code of a life that died on purpose, between commit and ack
FAILED = 76  # the handler raised
AFTER_RETURN = "after it returned"


def crash_point(commit: int | None, commits: int) -> str:
    """The name of a crash point: after the n-th of `commits` commits, or after returning."""
    return AFTER_RETURN if commit is None else f"after commit {commit} of {commits}"


class CrashingConnection:
    """A sqlite3 connection that kills its process right after its n-th commit (n=None:
    never), or only counts the commits. A `with db:` block commits on leaving, and so does an
    executed COMMIT/END statement: both count."""

    def __init__(self, db: sqlite3.Connection, crash_after: int | None) -> None:
        self._db, self._crash_after, self.commits = db, crash_after, 0

    def _committed(self) -> None:
        self.commits += 1
        if self.commits == self._crash_after:
            os._exit(CRASHED)

    def commit(self) -> None:
        """Commit, then maybe crash."""
        self._db.commit()
        self._committed()

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        """Execute; an explicit COMMIT counts as a commit."""
        cursor = self._db.execute(sql, *args)
        if sql.strip().upper().startswith(("COMMIT", "END")):
            self._committed()
        return cursor

    def __enter__(self) -> CrashingConnection:
        self._db.__enter__()
        return self

    def __exit__(self, *exc: object) -> Any:
        result = self._db.__exit__(*exc)
        if exc[0] is None:
            self._committed()
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def reserve(db: sqlite3.Connection, order: dict[str, Any]) -> None:
    """Take each line's quantity from the stock and record the reservation (no commit)."""
    for line in order["items"]:
        db.execute("UPDATE stock SET qty = qty - ? WHERE item_id = ?",
                   (line["quantity"], line["item_id"]))
        db.execute("INSERT INTO reservations (order_id, item_id, quantity) VALUES (?, ?, ?)",
                   (order["order_id"], line["item_id"], line["quantity"]))


def handle_off(order: dict[str, Any], db: sqlite3.Connection) -> None:
    """No duplicate check: every delivery reserves."""
    reserve(db, order)
    db.commit()


_seen: set[str] = set()  # the memory design's record: gone when the process dies


def handle_memory(order: dict[str, Any], db: sqlite3.Connection) -> None:
    """The original lab: a set of processed ids in the process's memory."""
    if order["order_id"] in _seen:
        return
    reserve(db, order)
    db.commit()
    _seen.add(order["order_id"])


def handle_sqlite(order: dict[str, Any], db: sqlite3.Connection) -> None:
    """The processed id and the reservation in one transaction."""
    with db:  # commits at the end of the block, rolls back if it raises
        seen = db.execute("SELECT 1 FROM processed WHERE order_id = ?",
                          (order["order_id"],)).fetchone()
        if seen:
            return
        db.execute("INSERT INTO processed (order_id) VALUES (?)", (order["order_id"],))
        reserve(db, order)


DESIGNS: dict[str, Handler] = {"off": handle_off, "memory": handle_memory,
                               "sqlite": handle_sqlite}


@dataclass(frozen=True)
class Verdict:
    """What one handler did with orders that were each delivered twice around a crash."""

    design: str
    orders: int
    lives: int  # consumer processes started (each crash starts another)
    crashes: int
    reserved_twice: int  # orders with more than one reservation
    not_reserved: int  # orders with no reservation at all
    stock_taken: int  # units taken from the stock
    stock_expected: int  # units the orders asked for
    commits: int = 1  # commits the handler makes on an order's first delivery
    harm: str = ""  # crash point -> what went wrong there, e.g. "after commit 1 of 2: 3
    # reserved twice"; empty when nothing did

    @property
    def valid(self) -> bool:
        """Every order reserved exactly once, and the stock agrees."""
        return (self.reserved_twice == 0 and self.not_reserved == 0
                and self.stock_taken == self.stock_expected)


def _life(amqp_url: str, queue: str, db_path: Path, handle: Handler, errors: Path,
          crash_at: dict[str, int | None]) -> None:
    """One consumer process: handle orders until the queue is empty or we crash on purpose."""
    try:
        conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
        ch = conn.channel()
        db = sqlite3.connect(db_path)
        while True:
            method, _props, body = ch.basic_get(queue)
            if method is None:
                os._exit(0)
            order = json.loads(body)
            if method.redelivered:
                handle(order, db)
            else:
                handle(order, CrashingConnection(db, crash_at[order["order_id"]]))
                os._exit(CRASHED)  # after the handler returned, before the ack
            ch.basic_ack(method.delivery_tag)
    except BaseException:
        errors.write_text(traceback.format_exc())
        os._exit(FAILED)


def _fork(work: Callable[[], None]) -> int:
    """Run `work` in a forked child (which must end with os._exit); its exit code."""
    with warnings.catch_warnings():  # fork in a threaded kernel: the child only pikas
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        work()
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _count_commits(handle: Handler, order: dict[str, Any], db_path: Path, errors: Path) -> int:
    """How many commits the handler makes on a first delivery (in a child, on a scratch copy
    of the database, so that neither its memory nor its writes count)."""
    scratch = db_path.with_suffix(".probe")
    scratch.unlink(missing_ok=True)
    with sqlite3.connect(db_path) as src, sqlite3.connect(scratch) as dst:
        src.backup(dst)

    def probe() -> None:
        try:
            db = CrashingConnection(sqlite3.connect(scratch), None)
            handle(order, db)
            os._exit(min(db.commits, 60))
        except BaseException:
            errors.write_text(traceback.format_exc())
            os._exit(FAILED)

    code = _fork(probe)
    scratch.unlink(missing_ok=True)
    if code == FAILED:
        raise RuntimeError(f"the handler failed:\n{errors.read_text()}")
    return code


def run(amqp_url: str, handle: Handler, orders: list[dict[str, Any]], workdir: str | Path, *,
        design: str = "yours", stock: int = 1000) -> Verdict:
    """Deliver each order twice around a crash to `handle`; count what it reserved."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    db_path, errors = workdir / f"{design}.sqlite", workdir / f"{design}.error"
    db_path.unlink(missing_ok=True)
    errors.unlink(missing_ok=True)
    items = sorted({line["item_id"] for o in orders for line in o["items"]})
    with sqlite3.connect(db_path) as db:
        db.executescript(SCHEMA)
        db.executemany("INSERT INTO stock VALUES (?, ?)", [(i, stock) for i in items])
    queue = f"crashbench.{design}"
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare(queue, durable=True)
        ch.queue_purge(queue)
        for order in orders:
            ch.basic_publish("", queue, json.dumps(order).encode(),
                             pika.BasicProperties(delivery_mode=2))
        commits = _count_commits(handle, orders[0], db_path, errors)
        points: list[int | None] = [*range(1, commits), None]  # after the last = returned
        crash_at = {o["order_id"]: points[i % len(points)] for i, o in enumerate(orders)}
        lives = crashes = 0
        while lives < 2 * len(orders) + 2:  # one crash per order at most, then one more life
            lives += 1
            code = _fork(lambda: _life(amqp_url, queue, db_path, handle, errors, crash_at))
            if code == 0:
                break
            if code != CRASHED:
                detail = errors.read_text() if errors.exists() else f"exit code {code}"
                raise RuntimeError(f"the {design} handler failed:\n{detail}")
            crashes += 1
        else:
            raise RuntimeError(f"the {design} consumer did not empty {queue}")
        ch.queue_delete(queue)
    finally:
        if conn.is_open:
            conn.close()
    with sqlite3.connect(db_path) as db:
        rows = dict(db.execute("SELECT order_id, COUNT(*) FROM reservations GROUP BY order_id"))
        left = sum(q for (q,) in db.execute("SELECT qty FROM stock"))
    twice = {o["order_id"] for o in orders if rows.get(o["order_id"], 0) > len(o["items"])}
    missing = {o["order_id"] for o in orders if o["order_id"] not in rows}
    harm = []
    for point in points:
        ids = {i for i, p in crash_at.items() if p == point}
        found = [f"{len(ids & twice)} reserved twice" if ids & twice else "",
                 f"{len(ids & missing)} never reserved" if ids & missing else ""]
        if any(found):
            harm.append(f"{crash_point(point, commits)}: {', '.join(f for f in found if f)}")
    asked = sum(line["quantity"] for o in orders for line in o["items"])
    return Verdict(design=design, orders=len(orders), lives=lives, crashes=crashes,
                   reserved_twice=len(twice), not_reserved=len(missing),
                   stock_taken=stock * len(items) - left, stock_expected=asked,
                   commits=commits, harm="; ".join(harm))
