"""Redelivery counts, the poison guard's memory: the protocol, an in-memory one, and the key.

The durable counters are the stores' (`store.sqlite.DeliveryCounts`, and each inventory
store); `session.Session` charges a count only to the redelivered message in hand.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

from lab_services import messages as m


class DeliveryCounter(Protocol):
    """Durable redelivery counts, keyed by message."""

    def bump(self, key: str) -> int:
        """Count one more redelivery of a message; return how many so far."""
        ...

    def forget(self, key: str) -> None:
        """The message was settled: drop its count (a replayed copy starts again at 0)."""
        ...


class MemoryDeliveryCounter:
    """Redelivery counts kept in memory (for tests, and services without a store)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def bump(self, key: str) -> int:
        """Count one more redelivery of a message; return how many so far."""
        self.counts[key] = self.counts.get(key, 0) + 1
        return self.counts[key]

    def forget(self, key: str) -> None:
        """The message was settled: drop its count."""
        self.counts.pop(key, None)


def delivery_key(delivery: m.Delivery) -> str:
    """A stable key for a message across redeliveries: its queue, id and body."""
    digest = hashlib.blake2b(digest_size=16)
    for part in (delivery.queue, str(delivery.properties.message_id or "")):
        digest.update(part.encode("utf-8", "replace") + b"\0")
    digest.update(delivery.body)
    return digest.hexdigest()
