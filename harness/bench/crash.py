"""Judge an inventory handler `handle(order, db)` under a crash between its commit and its ack.

A workbench for notebook 03. Orders wait in a real queue; a consumer process, forked afresh for
every "life", takes one order at a time with `basic_get`, calls the handler (which reserves
stock in SQLite and commits), and then, on an order's first delivery, dies with `os._exit`
before acking it: the broker delivers that order again to the next life. Forking gives every
life the memory the handler had before any life ran, exactly as a restarted process would:
what survives a crash is what the handler committed to the database, nothing else.
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

    @property
    def valid(self) -> bool:
        """Every order reserved exactly once, and the stock agrees."""
        return (self.reserved_twice == 0 and self.not_reserved == 0
                and self.stock_taken == self.stock_expected)


def _life(amqp_url: str, queue: str, db_path: Path, handle: Handler, errors: Path) -> None:
    """One consumer process: handle orders until the queue is empty or we crash on purpose."""
    try:
        conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
        ch = conn.channel()
        db = sqlite3.connect(db_path)
        while True:
            method, _props, body = ch.basic_get(queue)
            if method is None:
                os._exit(0)
            handle(json.loads(body), db)
            if not method.redelivered:
                os._exit(CRASHED)  # after the handler committed, before the ack
            ch.basic_ack(method.delivery_tag)
    except BaseException:
        errors.write_text(traceback.format_exc())
        os._exit(FAILED)


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
        lives = crashes = 0
        while lives < 2 * len(orders) + 2:  # one crash per order at most, then one more life
            lives += 1
            with warnings.catch_warnings():  # fork in a threaded kernel: the child only pikas
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
            if pid == 0:
                _life(amqp_url, queue, db_path, handle, errors)
            code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
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
    asked = sum(line["quantity"] for o in orders for line in o["items"])
    return Verdict(design=design, orders=len(orders), lives=lives, crashes=crashes,
                   reserved_twice=sum(1 for o in orders
                                      if rows.get(o["order_id"], 0) > len(o["items"])),
                   not_reserved=sum(1 for o in orders if o["order_id"] not in rows),
                   stock_taken=stock * len(items) - left, stock_expected=asked)
