"""Naive inventory service: reserves stock for each OrderPlaced and publishes the outcome."""

import os
import threading

from common import PORT, connect, consume_forever, db, declare, new_id, now, publish
from flask import Flask, jsonify

app = Flask("naive-inventory")

CATALOGUE = {"item_1": 100, "item_2": 50, "item_3": 75, "item_4": 200, "item_5": 300}

# NAIVE: the orders already handled, kept in memory. A restart forgets them, and a
# redelivered or republished order is then reserved a second time.
processed = set()


def setup():
    """Create the stock and the reservation ledger, with the initial stock."""
    initial = os.environ.get("INITIAL_STOCK", "")
    with db("inventory.db") as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS stock (item_id TEXT PRIMARY KEY,"
                     " stock INTEGER NOT NULL, initial INTEGER NOT NULL)")
        conn.execute("CREATE TABLE IF NOT EXISTS reservations (id INTEGER PRIMARY KEY,"
                     " order_id TEXT, item_id TEXT, quantity INTEGER)")
        for item, stock in CATALOGUE.items():
            stock = int(initial) if initial.isdigit() else stock
            conn.execute("INSERT OR IGNORE INTO stock VALUES (?, ?, ?)", (item, stock, stock))


def reserve(order):
    """Reserve every line of an order, or none; return the reason it failed, or None."""
    with db("inventory.db") as conn:
        for line in order["items"]:
            row = conn.execute("SELECT stock FROM stock WHERE item_id = ?",
                               (line["item_id"],)).fetchone()
            if row is None:
                return f"unknown item {line['item_id']}"
            if row["stock"] < line["quantity"]:
                return f"not enough {line['item_id']}"
        for line in order["items"]:
            conn.execute("UPDATE stock SET stock = stock - ? WHERE item_id = ?",
                         (line["quantity"], line["item_id"]))
            conn.execute("INSERT INTO reservations (order_id, item_id, quantity)"
                         " VALUES (?, ?, ?)", (order["order_id"], line["item_id"],
                                              line["quantity"]))
    return None


def on_order(order):
    """Handle one OrderPlaced event."""
    if order["order_id"] in processed:
        return  # seen it (since the last restart)
    reason = reserve(order)
    processed.add(order["order_id"])
    outcome = {"event_id": new_id(),
               "event_type": "InventoryFailed" if reason else "InventoryReserved",
               "timestamp": now(), "order_id": order["order_id"], "items": order["items"],
               "reason": reason, "order_timestamp": order.get("timestamp")}
    key = "inventory.failed" if reason else "inventory.reserved"
    publish("inventory_events", key, outcome)


@app.get("/inventory")
def inventory():
    with db("inventory.db") as conn:
        rows = conn.execute("SELECT * FROM stock ORDER BY item_id").fetchall()
    return jsonify({r["item_id"]: {"stock": r["stock"], "initial": r["initial"]} for r in rows})


@app.get("/reservations")
def reservations():
    with db("inventory.db") as conn:
        rows = conn.execute("SELECT order_id, item_id, quantity FROM reservations"
                            " ORDER BY id").fetchall()
    return jsonify({"reservations": [dict(r) for r in rows], "outcomes": []})


@app.get("/health")
def health():
    return jsonify({"service": "naive-inventory", "status": "ok", "pid": os.getpid()})


if __name__ == "__main__":
    setup()
    conn = connect()
    declare(conn.channel())
    conn.close()
    threading.Thread(target=consume_forever, args=("order_placed", on_order),
                     daemon=True).start()
    app.run(host="127.0.0.1", port=PORT, threaded=True)
