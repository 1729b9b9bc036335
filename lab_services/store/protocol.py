"""What the inventory needs from a store, whatever the engine: one protocol, two implementations.

`sqlite.SqliteInventoryStore` (one file, shared by the inventories of one host) and
`postgres.PostgresInventoryStore` (shared by inventories on several hosts) both implement
`InventoryStore`. Neither derives from the other: each speaks its own SQL.

The store keeps the redelivery counts of the inventory's input queue too (the poison
guard, `session.DeliveryCounter`), so that competing inventories sharing a store share
the counts: a message that killed one inventory is charged when another one takes it.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Outcome:
    """What the inventory decided for an order, with the event that says so.

    `body` is the outcome event as wire JSON, encoded once: the store keeps these bytes and
    a redelivered order re-publishes them as they are.
    """

    order_id: str
    reserved: bool
    reason: str | None
    event_id: str
    body: bytes

    @classmethod
    def stored(cls, order_id: str, reserved: bool, reason: str | None, text: str) -> Outcome:
        """An outcome read back from a store, where the event is kept as JSON text."""
        return cls(order_id, reserved, reason, json.loads(text)["event_id"], text.encode())


class InventoryStore(Protocol):
    """Stock, the reservation ledger, the outcomes, and the delivery counts."""

    def transaction(self) -> AbstractContextManager[Any]:
        """One transaction (nested: a savepoint); yields the handle the methods below take."""
        ...

    def seed(self, catalogue: dict[str, tuple[str, int, float]]) -> None:
        """Insert catalogue items that are not there yet (existing stock is kept)."""
        ...

    def outcome(self, order_id: str, db: Any = None) -> Outcome | None:
        """The stored outcome of an order; inside a transaction, also serialises on it."""
        ...

    def try_reserve(self, db: Any, order_id: str, event_id: str,
                    lines: list[tuple[str, int]]) -> str | None:
        """Reserve all lines or none, in the caller's transaction; return why not, or None."""
        ...

    def record_outcome(self, db: Any, outcome: Outcome) -> None:
        """Store an order's outcome in the caller's transaction (counting repeats)."""
        ...

    def inventory(self) -> dict[str, dict[str, Any]]:
        """Current stock per item: name, stock, price and initial stock."""
        ...

    def processed_count(self) -> int:
        """How many distinct orders have a stored outcome."""
        ...

    def reservations(self) -> list[dict[str, Any]]:
        """Every row of the reservation ledger, oldest first."""
        ...

    def outcomes(self) -> list[dict[str, Any]]:
        """Every stored outcome, in the order first stored."""
        ...

    def bump(self, key: str) -> int:
        """Count one more redelivery of a message, committed at once; return the count."""
        ...

    def forget(self, key: str) -> None:
        """The message was settled: drop its count."""
        ...


def lines_wanted(lines: list[tuple[str, int]]) -> dict[str, int]:
    """An order's lines summed per item (an item may appear on several lines)."""
    wanted: dict[str, int] = {}
    for item_id, qty in lines:
        wanted[item_id] = wanted.get(item_id, 0) + qty
    return wanted


__all__ = ["InventoryStore", "Outcome", "lines_wanted"]
