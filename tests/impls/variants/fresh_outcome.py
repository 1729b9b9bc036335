"""Broken: a duplicate is answered with a fresh InventoryReserved (nothing reserved), so a
republished FAILED order flips to RESERVED."""
from _base import framework, solution


def handle_order(db, body):
    order = solution.parse(body)
    if db.execute("SELECT 1 FROM processed WHERE order_id = ?",
                  (order["order_id"],)).fetchone():
        return framework.outcome_event(order, None)  # not the stored outcome
    return solution.handle_order(db, body)


framework.run(handle_order)
