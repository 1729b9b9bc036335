"""A store that cannot commit (a full disk): 503 with Retry-After, /health not ok, recovery.

Issue 18, item 4: with the order service's data dir full, POSTs got
`500 {"error": "internal error: OperationalError"}` while /health said ok. The broker
tests put a service's data dir on a small tmpfs (needs root, as the lab's CI runs), fill
it, and free it again.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import IN_CI

from harness.lab import Lab
from harness.waiting import wait_until
from lab_services.store import OrderStore
from lab_services.store_health import PROBE_BYTES, CommitWatch, sqlite_probe

ITEMS = [{"item_id": "item_1", "quantity": 1}]


# ---- the watch's logic, with a fake probe and a manual clock ------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_failed_commit_is_reported_until_one_succeeds():
    watch = CommitWatch()
    assert watch.check() is None
    watch.failed(sqlite3.OperationalError("database or disk is full"))
    assert watch.check() == "OperationalError: database or disk is full"
    watch.succeeded()
    assert watch.check() is None and watch.failures == 1


def test_while_failing_the_probe_runs_at_most_once_per_interval_and_clears_on_success():
    clock, calls, fail = Clock(), [], [True]

    def probe() -> None:
        calls.append(clock.now)
        if fail[0]:
            raise sqlite3.OperationalError("database or disk is full")

    watch = CommitWatch(probe, probe_interval=1.0, clock=clock)
    assert watch.check() is None and calls == []  # healthy: no probing at all
    watch.failed(sqlite3.OperationalError("disk I/O error"))
    assert watch.check() == "OperationalError: database or disk is full"
    clock.now = 0.5
    assert watch.check() is not None and len(calls) == 1  # not yet again
    fail[0] = False
    clock.now = 1.2
    assert watch.check() is None and len(calls) == 2


def test_a_watched_unit_of_work_reports_store_errors_but_not_other_errors():
    watch = CommitWatch()

    @contextlib.contextmanager
    def unit() -> Iterator[None]:
        yield

    with pytest.raises(ValueError), watch.watching(unit)():
        raise ValueError("a handler's bug is not the store's")
    assert watch.check() is None
    with pytest.raises(sqlite3.OperationalError), watch.watching(unit)():
        raise sqlite3.OperationalError("database or disk is full")
    assert watch.check() is not None
    with watch.watching(unit)():
        pass
    assert watch.check() is None


def test_the_probe_commits_more_than_an_order_to_the_stores_file(tmp_path):
    store = OrderStore(tmp_path / "order.sqlite")
    sqlite_probe(store)()
    sqlite_probe(store)()  # again: replaces its row
    rows = store.db().execute("SELECT length(pad) FROM store_probe").fetchall()
    assert [r[0] for r in rows] == [PROBE_BYTES]


# ---- a real full filesystem -----------------------------------------------------------------

@contextlib.contextmanager
def small_tmpfs(where: Path, size: str = "2m") -> Iterator[Path]:
    """A tmpfs of `size` mounted at `where` (skipped without the right to mount)."""
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        reason = f"cannot mount a tmpfs here: {done.stderr.strip()[:200]}"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(folder: Path) -> Path:
    """Write a file into `folder` until the filesystem is full; return it."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


def _lab_on_tmpfs(broker, tmp_path: Path, service: str) -> Iterator[tuple[Lab, Path]]:
    lab = Lab(broker, workdir=tmp_path / "lab", initial_stock="100000")
    with small_tmpfs(lab.workdir / service) as data:
        try:
            lab.start()
            yield lab, data
        finally:
            lab.close()


@pytest.fixture
def order_on_tmpfs(broker, tmp_path):
    """A lab whose order service keeps its store on a 2 MB tmpfs."""
    yield from _lab_on_tmpfs(broker, tmp_path, "order")


@pytest.fixture
def inventory_on_tmpfs(broker, tmp_path):
    """A lab whose inventory keeps its store on a 2 MB tmpfs."""
    yield from _lab_on_tmpfs(broker, tmp_path, "inventory")


@pytest.mark.broker
def test_a_full_disk_gets_503_with_retry_after_and_health_says_so(order_on_tmpfs):
    lab, data = order_on_tmpfs
    url = lab.url("order")
    with requests.Session() as http:
        before = [lab.place_order("disk", ITEMS, session=http) for _ in range(3)]
        assert [r.status_code for r in before] == [201] * 3
        filler = fill(data)
        answers = [lab.place_order("disk", ITEMS, session=http) for _ in range(30)]
        codes = [r.status_code for r in answers]
        # A few may still fit in the space SQLite's WAL file already holds; none is a 500.
        assert set(codes) <= {201, 503}, codes
        refused = [r for r in answers if r.status_code == 503]
        assert refused, codes
        for r in refused:
            assert r.headers["Retry-After"].isdigit() and int(r.headers["Retry-After"]) > 0
            body = r.json()
            assert body["cause"] == "store" and "full" in body["error"], body
        health = http.get(url + "/health", timeout=10)
        assert health.status_code == 503
        assert health.json()["store"] == "failing" and "full" in health.json()["store_error"]

        os.remove(filler)
        wait_until(lambda: http.get(url + "/health", timeout=10).status_code == 200, 30,
                   "the order service healthy again once space is freed")
        after = [lab.place_order("disk", ITEMS, session=http) for _ in range(3)]
        assert [r.status_code for r in after] == [201] * 3
    accepted = [r.json()["order_id"] for r in before + answers + after if r.status_code == 201]
    # Every 201 is an order stored and announced; nothing refused was stored.
    assert sorted(o["order_id"] for o in lab.orders()) == sorted(accepted)
    lab.wait_notified(accepted, 60)


@pytest.mark.broker
def test_the_inventorys_health_reports_a_store_that_cannot_commit(inventory_on_tmpfs):
    lab, data = inventory_on_tmpfs
    url = lab.url("inventory")
    first = lab.place_order("disk", ITEMS)
    assert first.status_code == 201
    lab.wait_notified([first.json()["order_id"]], 30)
    filler = fill(data)
    placed = [lab.place_order("disk", ITEMS).json()["order_id"] for _ in range(20)]

    def failing() -> dict | None:
        r = requests.get(url + "/health", timeout=10)
        return r.json() if r.status_code == 503 and r.json().get("store") == "failing" else None

    body = wait_until(failing, 30, "the inventory's /health reporting its failing store")
    assert "full" in body["store_error"] or "I/O" in body["store_error"], body
    os.remove(filler)
    wait_until(lambda: requests.get(url + "/health", timeout=10).status_code == 200, 30,
               "the inventory healthy again once space is freed")
    lab.wait_notified(placed, 60)
