"""Your inventory service. Everything else is ready in framework.py: write handle_order.

Run it with the lab's order and notification services, and grade it:

    python -m harness grade --impl exercises/inventory/impl.toml
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from framework import InvalidMessage, outcome_event, run

__all__ = ["InvalidMessage", "handle_order", "json", "outcome_event"]


def handle_order(db: sqlite3.Connection, body: bytes) -> dict[str, Any]:
    """Handle one message from the queue `order_placed`; return the outcome event.

    The framework calls this inside a transaction on `db` (committed when you return,
    rolled back when you raise), then publishes the event you return to `inventory_events`
    with publisher confirms, and acks the message only after that.

    The message body should be an OrderPlaced event (docs/contract.md):
        {"event_id", "event_type": "OrderPlaced", "timestamp", "order_id", "user_id",
         "items": [{"item_id", "quantity", "price"}, ...], "total_amount"}

    Your duties:
    1. Malformed input: if the body is over 64 KB, not JSON, not an object, not an OrderPlaced, or a
       field is missing or of the wrong type (event_id and order_id non-empty strings of
       at most 64 characters; items a non-empty list; each item_id a string of 1 to 64
       characters; each quantity an integer from 1 to 1000), raise
       InvalidMessage("<field>: <what is wrong>"). The framework dead-letters the message
       with that reason and goes on with the next one.
    2. Duplicates: RabbitMQ redelivers a message after a crash, and a publisher may send an
       order again with a new event_id. If this order_id is in the table `processed`,
       reserve nothing and return the stored outcome again: json.loads(row["outcome"]).
    3. Otherwise reserve every line or none. Tables:
           stock(item_id, stock, initial)
           reservations(id, order_id, item_id, quantity)   -- one row per reserved line
           processed(order_id, reserved, reason, outcome)  -- outcome: the event as JSON
       An unknown item or too little stock fails the whole order with a reason.
    4. Build the event with outcome_event(order, reason) (reason None = reserved), record it
       in `processed`, and return it.
    """
    # TODO: write the four steps above, then delete the next line.
    raise NotImplementedError("TODO in exercises/inventory/inventory.py: handle_order")


if __name__ == "__main__":
    run(handle_order)
