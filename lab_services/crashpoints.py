"""Deterministic crash points, so the lab can show each idempotency design's window.

`LAB_CRASH_AT=after_commit:ORD-1,ORD-2` makes the inventory exit at that point while it
handles one of those orders (`*` means any order). Each point fires once per process: the
harness restarts the service without the variable to let the redelivery through.
"""

from __future__ import annotations

import logging
import os
import sys

POINTS = ("before_commit", "after_commit", "after_publish")
CRASH_EXIT_CODE = 70

log = logging.getLogger(__name__)


def _parse(spec: str) -> tuple[str | None, set[str]]:
    if not spec:
        return None, set()
    point, _, orders = spec.partition(":")
    if point not in POINTS:
        raise ValueError(f"LAB_CRASH_AT point must be one of {POINTS}, not {point!r}")
    return point, {o.strip() for o in orders.split(",") if o.strip()} or {"*"}


_POINT: str | None = None
_ORDERS: set[str] = set()


def configure(spec: str) -> None:
    """Arm the crash point named by a LAB_CRASH_AT value (empty: none)."""
    global _POINT, _ORDERS
    _POINT, _ORDERS = _parse(spec)


def crash_if(point: str, order_id: str) -> None:
    """Exit the process now if the configured crash point matches this point and order."""
    if point == _POINT and ("*" in _ORDERS or order_id in _ORDERS):
        log.error("LAB_CRASH_AT: crashing at %s for %s", point, order_id)
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stderr.flush()
        os._exit(CRASH_EXIT_CODE)
