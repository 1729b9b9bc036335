"""Whether a service's store can commit, for `/health` and for the 503 a request gets.

A full disk or an I/O error makes SQLite refuse a commit (`sqlite3.OperationalError`),
while reads still work: `/health` must not say ok then. The outcome of the service's real
commits is the evidence: a failed commit marks the store failing, the next one that
succeeds clears it. While failing, `/health` also asks the store itself, with a write
larger than an order's, at most once per `probe_interval`, so that a service nobody writes
to notices the space coming back. A tiny write is not evidence: SQLite reuses the space
its rolled-back write left in the WAL file, so a few pages may still commit on a full disk.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

log = logging.getLogger(__name__)

# What a store raises when it cannot commit now but may later (full disk, I/O error, lock).
STORE_ERRORS: tuple[type[BaseException], ...] = (sqlite3.OperationalError,)
# Bytes the probe writes: more than an order with its outbox row and indexes.
PROBE_BYTES = 64 * 1024
# Seconds a client is told to wait before retrying a request the store refused.
RETRY_AFTER_S = 5


def sqlite_probe(store: Any) -> Callable[[], None]:
    """A probe that commits PROBE_BYTES to a small table of the store's SQLite file."""
    def probe() -> None:
        with store.transaction() as db:
            db.execute("CREATE TABLE IF NOT EXISTS store_probe"
                       " (id INTEGER PRIMARY KEY, pad BLOB NOT NULL)")
            db.execute("INSERT OR REPLACE INTO store_probe(id, pad) VALUES (1, randomblob(?))",
                       (PROBE_BYTES,))
    return probe


class CommitWatch:
    """The last known outcome of a store's commits: ok, or failing with the reason."""

    def __init__(self, probe: Callable[[], None] | None = None, *,
                 probe_interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.probe = probe
        self.probe_interval = probe_interval
        self.clock = clock
        self._lock = threading.Lock()
        self._error: str | None = None
        self._probed_at = float("-inf")
        self.failures = 0

    def failed(self, exc: BaseException) -> None:
        """A commit failed with `exc`: the store is failing until a commit succeeds."""
        reason = f"{exc.__class__.__name__}: {exc}"[:200]
        with self._lock:
            if self._error is None:
                log.warning("the store cannot commit: %s", reason)
            self._error = reason
            self.failures += 1

    def succeeded(self) -> None:
        """A commit succeeded: the store is ok."""
        if self._error is None:  # the common case, without the lock
            return
        with self._lock:
            if self._error is not None:
                log.info("the store commits again")
            self._error = None

    @property
    def error(self) -> str | None:
        """Why the last commit failed, or None if it succeeded."""
        return self._error

    def check(self) -> str | None:
        """Why the store cannot commit, or None; while failing, probes it at most once a while."""
        if self._error is None or self.probe is None:
            return self._error
        now = self.clock()
        with self._lock:
            if now - self._probed_at < self.probe_interval:
                return self._error
            self._probed_at = now
        try:
            self.probe()
        except STORE_ERRORS as exc:
            self.failed(exc)
        else:
            self.succeeded()
        return self._error

    def watching(self, unit_of_work: Callable[[], AbstractContextManager[Any]]
                 ) -> Callable[[], AbstractContextManager[Any]]:
        """`unit_of_work` (e.g. a store's transaction) that reports its commits here."""
        @contextmanager
        def watched() -> Iterator[Any]:
            try:
                with unit_of_work() as unit:
                    yield unit
            except STORE_ERRORS as exc:
                self.failed(exc)
                raise
            self.succeeded()
        return watched
