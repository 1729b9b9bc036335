"""Reference answer to exercises/inventory: handle_order, with the exercise's framework."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

# The framework is the exercise's own, unchanged.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "exercises" / "inventory"))

from framework import InvalidMessage, outcome_event, run  # noqa: E402

MAX_ID = 64  # docs/contract.md: ids are at most 64 characters
MAX_QUANTITY = 1000  # ... and a quantity at most 1000
MAX_BODY = 64 * 1024  # ... and an event at most 64 KB


def parse(body: bytes) -> dict[str, Any]:
    """The OrderPlaced event in body; InvalidMessage naming the first bad field."""
    if len(body) > MAX_BODY:
        raise InvalidMessage(f"body: oversize ({len(body)} bytes > {MAX_BODY})")
    try:
        order = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise InvalidMessage("body: not valid JSON") from None
    if not isinstance(order, dict):
        raise InvalidMessage("body: must be a JSON object")
    if order.get("event_type") != "OrderPlaced":
        raise InvalidMessage(f"event_type: not OrderPlaced ({order.get('event_type')!r})"[:200])
    for field in ("event_id", "order_id"):
        if not isinstance(order.get(field), str) or not order[field]:
            raise InvalidMessage(f"{field}: missing or not a string")
        if len(order[field]) > MAX_ID:
            raise InvalidMessage(f"{field}: at most {MAX_ID} characters")
    items = order.get("items")
    if not isinstance(items, list) or not items:
        raise InvalidMessage("items: must be a non-empty list")
    for i, line in enumerate(items):
        if not isinstance(line, dict) or not isinstance(line.get("item_id"), str) \
                or not 0 < len(line["item_id"]) <= MAX_ID:
            raise InvalidMessage(f"items[{i}].item_id: a string of 1 to {MAX_ID} characters")
        qty = line.get("quantity")
        if isinstance(qty, bool) or not isinstance(qty, int) or not 1 <= qty <= MAX_QUANTITY:
            raise InvalidMessage(f"items[{i}].quantity: an integer from 1 to {MAX_QUANTITY}")
    return order


def handle_order(db: sqlite3.Connection, body: bytes) -> dict[str, Any]:
    """Validate, answer a duplicate with its stored outcome, else reserve all or nothing."""
    order = parse(body)
    seen = db.execute("SELECT outcome FROM processed WHERE order_id = ?",
                      (order["order_id"],)).fetchone()
    if seen is not None:
        return json.loads(seen["outcome"])
    wanted: dict[str, int] = {}
    for line in order["items"]:
        wanted[line["item_id"]] = wanted.get(line["item_id"], 0) + line["quantity"]
    reason = None
    for item_id, qty in wanted.items():
        row = db.execute("SELECT stock FROM stock WHERE item_id = ?", (item_id,)).fetchone()
        if row is None:
            reason = f"unknown item {item_id}"[:200]
            break
        if row["stock"] < qty:
            reason = f"insufficient stock for {item_id}: {row['stock']} left, {qty} wanted"
            break
    if reason is None:
        for item_id, qty in wanted.items():
            db.execute("UPDATE stock SET stock = stock - ? WHERE item_id = ?", (qty, item_id))
            db.execute("INSERT INTO reservations (order_id, item_id, quantity) VALUES (?, ?, ?)",
                       (order["order_id"], item_id, qty))
    event = outcome_event(order, reason)
    db.execute("INSERT INTO processed VALUES (?, ?, ?, ?)",
               (order["order_id"], int(reason is None), reason, json.dumps(event)))
    return event


if __name__ == "__main__":
    run(handle_order)
