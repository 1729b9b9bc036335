"""Competing inventories share one store: the same order handled at once by two consumers
reserves once, and stock never goes below zero (SQLite across processes, PostgreSQL).

The PostgreSQL tests use the server on 127.0.0.1:5432 (PG_TEST_URL to change it), each in a
fresh database of its own that is dropped afterwards.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import uuid
from collections.abc import Iterator

import pytest

from lab_services import events
from lab_services.store import (
    InventoryStore,
    Outcome,
    SqliteInventoryStore,
    catalogue,
    open_inventory_store,
)

IN_CI = os.environ.get("CI", "").lower() == "true"
PG_ADMIN_URL = os.environ.get("PG_TEST_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _pg() -> object:
    try:
        import psycopg
        return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except Exception as exc:
        if IN_CI:
            pytest.fail(f"no PostgreSQL at {PG_ADMIN_URL}: {exc}")
        pytest.skip(f"no PostgreSQL at {PG_ADMIN_URL}: {exc}")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped after the test."""
    admin = _pg()
    name = f"rabbit_lab_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()


def _open(target: str) -> InventoryStore:
    if target.startswith("postgresql://"):
        return open_inventory_store("", url=target)
    return open_inventory_store(target)


def _process(target: str, orders: list[tuple[str, str]], quantity: int, results, go,
             seed: int) -> None:
    """What one inventory does per order in the default `sqlite` idempotency mode."""
    store = _open(target)
    store.db()
    random.Random(seed).shuffle(orders)  # each consumer meets the orders in its own order
    go.wait(60)  # every consumer starts at once, so the duplicates really race
    for order_id, item_id in orders:
        items = events.validate_items([{"item_id": item_id, "quantity": quantity, "price": 1}])
        order = events.order_placed(order_id, "u1", items)
        with store.transaction() as db:
            if store.outcome(order_id, db) is not None:
                results.put(("duplicate", order_id))
                continue
            why_not = store.try_reserve(db, order_id, order.event_id, [(item_id, quantity)])
            outcome = events.inventory_outcome(order, why_not is None, why_not)
            store.record_outcome(db, Outcome(order_id, why_not is None, why_not,
                                             outcome.event_id, outcome.to_json()))
        results.put(("reserved" if why_not is None else "failed", order_id))


def _race(target: str, stock: dict[str, int], quantity: int,
          orders: int) -> tuple[InventoryStore, list]:
    store = _open(target)
    store.seed(catalogue(stock))
    items = sorted(stock)
    ids = [(f"ORD-20260101-{i:08x}", items[i % len(items)]) for i in range(orders)]
    ctx = multiprocessing.get_context("spawn")
    results, go = ctx.Queue(), ctx.Event()
    # Four consumers, each handed every order: duplicates race their originals.
    procs = [ctx.Process(target=_process, args=(target, list(ids), quantity, results, go, n))
             for n in range(4)]
    for p in procs:
        p.start()
    go.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    got = [results.get(timeout=10) for _ in range(4 * orders)]
    return store, got


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_competing_inventories_reserve_each_order_once(backend, tmp_path, request):
    target = (request.getfixturevalue("pg_url") if backend == "postgresql"
              else str(tmp_path / "inventory.sqlite"))
    store, got = _race(target, stock={"item_1": 10_000}, quantity=3, orders=200)
    ledger = store.reservations()
    assert len(ledger) == 200 and len({r["order_id"] for r in ledger}) == 200
    assert sum(1 for kind, _ in got if kind == "reserved") == 200
    assert store.inventory()["item_1"]["stock"] == 10_000 - 3 * 200
    assert all(o["times_processed"] == 1 for o in store.outcomes())


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_competing_inventories_never_oversell(backend, tmp_path, request):
    target = (request.getfixturevalue("pg_url") if backend == "postgresql"
              else str(tmp_path / "inventory.sqlite"))
    # 100 items with stock for one order each, and two orders for every item: the two
    # race in different consumers, and exactly one may win.
    stock = {f"item_{i:03d}": 3 for i in range(100)}
    store, got = _race(target, stock=stock, quantity=3, orders=200)
    reserved = {oid for kind, oid in got if kind == "reserved"}
    assert len(reserved) == 100
    assert all(row["stock"] == 0 for row in store.inventory().values() if row["initial"] == 3)
    assert sum(r["quantity"] for r in store.reservations()) == 300
    failed = [o for o in store.outcomes() if not o["reserved"]]
    assert len(failed) == 100 and all("insufficient stock" in o["reason"] for o in failed)


def test_postgresql_reservations_lock_their_stock_rows(pg_url):
    import threading

    import psycopg

    from harness.waiting import wait_until
    from lab_services.store.postgres import PostgresInventoryStore

    first, second = PostgresInventoryStore(pg_url), PostgresInventoryStore(pg_url)
    first.seed(catalogue({"item_1": 3}))
    answer: list = []

    def contender() -> None:
        with second.transaction() as db:
            answer.append(second.try_reserve(db, "ORD-B", "e-b", [("item_1", 3)]))

    with first.transaction() as db:
        assert first.try_reserve(db, "ORD-A", "e-a", [("item_1", 3)]) is None
        t = threading.Thread(target=contender)
        t.start()
        watcher = psycopg.connect(pg_url, autocommit=True)
        wait_until(lambda: watcher.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND datname = current_database()").fetchone()[0] >= 1, 30,
            "the second reservation waiting for the first one's lock")
        watcher.close()
    t.join(30)
    # It waited, then saw the stock the first one left: nothing to take.
    assert answer and answer[0] is not None and "insufficient stock" in answer[0]
    assert first.inventory()["item_1"]["stock"] == 0


def test_a_store_opened_while_another_process_holds_the_new_file_waits_for_it(tmp_path, caplog):
    # Two inventories started together open one new file at the same moment. Switching a
    # file still in rollback-journal mode to WAL fails at once with "database is locked"
    # while another connection writes it: SQLite does not call the busy handler there.
    # (CI: a scale-out replica crashed on it.) Here the other process is a connection
    # that has made the file and holds a write transaction on it, still in rollback mode.
    import logging
    import sqlite3
    import threading

    from harness.waiting import wait_until

    path = str(tmp_path / "inventory.db")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("CREATE TABLE early (x)")
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO early VALUES (1)")
    opened: list[object] = []

    def open_store() -> None:
        try:
            opened.append(SqliteInventoryStore(path))
        except Exception as exc:  # the thread's outcome is judged below
            opened.append(exc)

    caplog.set_level(logging.INFO, logger="lab_services.store.sqlite")
    opener = threading.Thread(target=open_store, daemon=True)
    opener.start()
    wait_until(lambda: opened or "waiting to switch it to WAL" in caplog.text, 10,
               "the store to wait for the file, or to fail")
    other.execute("COMMIT")
    other.close()
    opener.join(30)
    (store,) = opened
    assert isinstance(store, SqliteInventoryStore), store
    assert store.db().execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_redelivery_counts_live_in_the_inventory_store_shared_by_its_consumers(
        backend, tmp_path, request):
    # The poison guard's counts: a message that killed one inventory is charged when
    # another inventory on the same store takes it (with PostgreSQL: on another host).
    target = (request.getfixturevalue("pg_url") if backend == "postgresql"
              else str(tmp_path / "inventory.sqlite"))
    here, there = _open(target), _open(target)
    assert [here.bump("m1"), there.bump("m1"), here.bump("m2")] == [1, 2, 1]
    there.forget("m1")
    assert [here.bump("m1"), there.bump("m2")] == [1, 2]
    if backend == "postgresql":
        assert not list(tmp_path.iterdir())  # nothing kept on the local disk


def _outcome(order_id: str, why_not: str | None) -> Outcome:
    order = events.order_placed(order_id, "u1", events.validate_items(
        [{"item_id": "item_1", "quantity": 2, "price": 1}]))
    event = events.inventory_outcome(order, why_not is None, why_not)
    return Outcome(order_id, why_not is None, why_not, event.event_id, event.to_json())


def test_a_burst_reserves_in_memory_and_a_failed_order_rolls_back_alone(tmp_path):
    store = SqliteInventoryStore(tmp_path / "inventory.sqlite")
    store.seed(catalogue({"item_1": 5}))
    with store.transaction() as burst:
        with store.transaction() as db:  # A: reserved
            assert store.try_reserve(db, "A", "ea", [("item_1", 2)]) is None
            store.record_outcome(db, _outcome("A", None))
        with pytest.raises(RuntimeError), store.transaction() as db:  # B: fails midway
            assert store.try_reserve(db, "B", "eb", [("item_1", 2)]) is None
            store.record_outcome(db, _outcome("B", None))
            raise RuntimeError("handler failed after reserving")
        with store.transaction() as db:  # C sees A's reservation, not B's
            assert store.try_reserve(db, "C", "ec", [("item_1", 2), ("item_1", 2)]) == (
                "insufficient stock for item_1: wanted 4, have 3")
            assert store.try_reserve(db, "C", "ec", [("item_1", 2), ("item_1", 1)]) is None
            store.record_outcome(db, _outcome("C", None))
        # Within the burst, a repeated order finds its outcome before anything is written.
        assert store.outcome("A", burst).reserved
        assert store.outcome("B", burst) is None
        assert store.try_reserve(burst, "D", "ed", [("item_1", 1)]).startswith(
            "insufficient stock for item_1: wanted 1, have 0")
        assert store.processed_count() == 0  # nothing written before the commit
    assert [(r["order_id"], r["quantity"]) for r in store.reservations()] == [("A", 2), ("C", 3)]
    assert store.db().execute("SELECT count(*) FROM reservations").fetchone()[0] == 2
    assert store.inventory()["item_1"]["stock"] == 0
    stored = store.outcome("A")
    assert stored.body == _outcome_body(store, "A") and stored.reserved
    assert [o["order_id"] for o in store.outcomes()] == ["A", "C"]


def _outcome_body(store: SqliteInventoryStore, order_id: str) -> bytes:
    return store.db().execute("SELECT event FROM outcomes WHERE order_id = ?",
                              (order_id,)).fetchone()[0].encode()


def test_a_burst_that_fails_to_commit_writes_nothing(tmp_path):
    store = SqliteInventoryStore(tmp_path / "inventory.sqlite")
    store.seed(catalogue({"item_1": 5}))
    with pytest.raises(RuntimeError), store.transaction() as db:
        assert store.try_reserve(db, "A", "ea", [("item_1", 2)]) is None
        store.record_outcome(db, _outcome("A", None))
        raise RuntimeError("the burst failed")
    assert store.reservations() == [] and store.processed_count() == 0
    assert store.inventory()["item_1"]["stock"] == 5
    with store.transaction() as db:  # and the next burst starts clean
        assert store.try_reserve(db, "A", "ea", [("item_1", 5)]) is None
        store.record_outcome(db, _outcome("A", None))
    assert store.inventory()["item_1"]["stock"] == 0


@pytest.mark.broker
def test_the_inventory_on_postgresql_keeps_everything_there_redelivery_counts_included(
        make_lab, pg_url):
    import psycopg

    lab = make_lab(extra_env={"STORE_URL": pg_url})
    ids = [lab.place_order("u1", [{"item_id": "item_1", "quantity": 1}]).json()["order_id"]
           for _ in range(5)]
    lab.wait_notified(ids, 60)
    with psycopg.connect(pg_url) as conn:
        stored = {r[0] for r in conn.execute("SELECT order_id FROM outcomes")}
        assert conn.execute("SELECT count(*) FROM deliveries").fetchone()[0] == 0
    assert stored == set(ids)
    # Nothing of the inventory's is kept on the local disk: no SQLite file beside it.
    assert not list((lab.workdir / "inventory").glob("*.sqlite*"))
