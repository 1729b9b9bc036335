"""Broken: never checks the stock, so it oversells (stock goes below zero)."""
import json

from _base import framework, solution


def handle_order(db, body):
    order = solution.parse(body)
    seen = db.execute("SELECT outcome FROM processed WHERE order_id = ?",
                      (order["order_id"],)).fetchone()
    if seen is not None:
        return json.loads(seen["outcome"])
    for line in order["items"]:  # no look at the stock: every order is reserved
        db.execute("UPDATE stock SET stock = stock - ? WHERE item_id = ?",
                   (line["quantity"], line["item_id"]))
        db.execute("INSERT INTO reservations (order_id, item_id, quantity) VALUES (?, ?, ?)",
                   (order["order_id"], line["item_id"], line["quantity"]))
    event = framework.outcome_event(order, None)
    db.execute("INSERT INTO processed VALUES (?, ?, ?, ?)",
               (order["order_id"], 1, None, json.dumps(event)))
    return event


framework.run(handle_order)
