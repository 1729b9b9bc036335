"""Bounded polling: the one way the harness and the tests wait for something to happen."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(TimeoutError):
    """A condition did not come true within its time bound."""


def wait_until(
    condition: Callable[[], T | None],
    timeout: float,
    what: str,
    *,
    interval: float = 0.05,
    max_interval: float = 0.5,
    detail: Callable[[], str] | None = None,
) -> T:
    """Poll `condition` until it returns something truthy, and return that; else WaitTimeout."""
    deadline = time.monotonic() + timeout
    delay = interval
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            extra = ""
            if detail is not None:
                try:
                    extra = "\n" + detail()
                except Exception as exc:  # the detail is a courtesy; never mask the timeout
                    extra = f"\n(detail unavailable: {exc})"
            raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what}{extra}")
        time.sleep(delay)
        delay = min(delay * 1.5, max_interval)


class Periodic:
    """A daemon thread that calls `tick()` every `interval` seconds until stopped.

    The harness's samplers (queue depths, service memory, cluster leaders) are all this
    loop. `fixed_rate` keeps to a schedule (a slow tick shortens the next wait) instead of
    waiting a whole interval after each tick. `finish()` runs on the thread once the loop
    ends: a pika connection must be closed by the thread that made it.
    """

    def __init__(self, tick: Callable[[], None], interval: float, *, name: str,
                 fixed_rate: bool = False, finish: Callable[[], None] | None = None,
                 join_timeout: float = 10.0) -> None:
        self.tick, self.interval, self.fixed_rate = tick, interval, fixed_rate
        self.finish, self.join_timeout = finish, join_timeout
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Periodic:
        """Start ticking in the background."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop (after the tick under way, if any) and wait for the thread to end."""
        self.stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.join_timeout)

    def _run(self) -> None:
        next_due = time.monotonic()
        try:
            while not self.stopping.is_set():
                self.tick()
                if self.fixed_rate:
                    next_due += self.interval
                    self.stopping.wait(max(0.0, next_due - time.monotonic()))
                else:
                    self.stopping.wait(self.interval)
        finally:
            if self.finish is not None:
                self.finish()
