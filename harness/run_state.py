"""What a run reads back from an implementation at its end, and the shape the contract gives
each part (a part that cannot be read, or comes in another shape, is a contract gap)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunState:
    """Everything the services and the DLQ hold at the end of a run."""

    orders: list[dict[str, Any]]
    inventory: dict[str, Any]
    ledger: dict[str, Any]
    notifications: list[dict[str, Any]]
    dlq: list[dict[str, Any]]
    health: dict[str, Any] = field(default_factory=dict)
    # What could not be read (a contract gap): "orders", "inventory", "ledger",
    # "notifications", "dlq". A check that needs one of these is not judged.
    unknown: set[str] = field(default_factory=set)


# How each part of the state is read, and the shape the contract gives it.
def _orders_shape(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(o, dict) and "order_id" in o for o in v)


def _inventory_shape(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(i, dict) and {"initial", "stock"} <= set(i)
                                       for i in v.values())


def _ledger_shape(v: Any) -> bool:
    rows = v.get("reservations") if isinstance(v, dict) else None
    return isinstance(rows, list) and all(
        isinstance(r, dict) and {"order_id", "item_id", "quantity"} <= set(r) for r in rows)


def _notes_shape(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(n, dict) and "order_id" in n for n in v)


STATE_PATHS = {  # field: (service, path, shape check)
    "orders": ("order", "/orders", _orders_shape),
    "inventory": ("inventory", "/inventory", _inventory_shape),
    "ledger": ("inventory", "/reservations", _ledger_shape),
    "notifications": ("notification", "/notifications", _notes_shape),
}
