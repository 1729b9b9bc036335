"""Broken: the (durable) processed record is keyed on event_id, so a copy of an order with a
new event_id is reserved again."""
import json

from _base import framework, solution


def handle_order(db, body):
    order = solution.parse(body)
    db.execute("CREATE TABLE IF NOT EXISTS processed_events (event_id PRIMARY KEY, outcome)")
    seen = db.execute("SELECT outcome FROM processed_events WHERE event_id = ?",
                      (order["event_id"],)).fetchone()
    if seen is not None:
        return json.loads(seen["outcome"])
    db.execute("DELETE FROM processed WHERE order_id = ?", (order["order_id"],))
    event = solution.handle_order(db, body)
    db.execute("INSERT INTO processed_events VALUES (?, ?)", (order["event_id"], json.dumps(event)))
    return event


framework.run(handle_order)
