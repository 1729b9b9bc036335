"""Broken: the processed-order record is a set in memory, forgotten at a restart."""
from _base import framework, solution

seen = {}


def handle_order(db, body):
    order = solution.parse(body)
    if order["order_id"] in seen:
        return seen[order["order_id"]]
    db.execute("DELETE FROM processed WHERE order_id = ?", (order["order_id"],))  # not durable
    seen[order["order_id"]] = event = solution.handle_order(db, body)
    return event


framework.run(handle_order)
