"""Naive order service: POST /order stores the order and publishes OrderPlaced."""

import json
import os
import threading

from common import PORT, connect, consume_forever, db, declare, new_id, now, publish
from flask import Flask, jsonify, request

app = Flask("naive-order")


def setup():
    """Create the orders table."""
    with db("orders.db") as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS orders (order_id TEXT PRIMARY KEY,"
                     " body TEXT NOT NULL, status TEXT NOT NULL)")


def bad(field, what, status=400):
    """A JSON error naming the field."""
    return jsonify({"error": f"{field}: {what}", "field": field}), status


@app.post("/order")
def place_order():
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return bad("body", "must be a JSON object")
    if not isinstance(body.get("user_id"), str) or not body["user_id"]:
        return bad("user_id", "must be a non-empty string")
    items = body.get("items")
    if not isinstance(items, list) or not items:
        return bad("items", "must be a non-empty list")
    for i, line in enumerate(items):
        if not isinstance(line, dict) or not isinstance(line.get("item_id"), str):
            return bad(f"items[{i}].item_id", "must be a string")
        qty = line.get("quantity")
        if not isinstance(qty, int) or isinstance(qty, bool) or qty < 1:
            return bad(f"items[{i}].quantity", "must be a positive integer")
    order = {
        "order_id": "ORD-" + new_id()[:12].upper(),
        "user_id": body["user_id"],
        "items": [{"item_id": x["item_id"], "quantity": x["quantity"],
                   "price": float(x.get("price", 0))} for x in items],
        "status": "PENDING",
        "created_at": now(),
        "event_id": new_id(),
    }
    order["total_amount"] = round(sum(x["quantity"] * x["price"] for x in order["items"]), 2)
    with db("orders.db") as conn:
        conn.execute("INSERT INTO orders VALUES (?, ?, 'PENDING')",
                     (order["order_id"], json.dumps(order)))
    event = {"event_id": order["event_id"], "event_type": "OrderPlaced",
             "timestamp": order["created_at"], "order_id": order["order_id"],
             "user_id": order["user_id"], "items": order["items"],
             "total_amount": order["total_amount"]}
    try:
        publish("order_events", "order.placed", event)
    except Exception:
        return jsonify({"error": "broker: unavailable", "retry": True}), 503
    return jsonify(order), 201


def load(row):
    """An order row as the API shows it."""
    return {**json.loads(row["body"]), "status": row["status"]}


@app.get("/order/<order_id>")
def get_order(order_id):
    with db("orders.db") as conn:
        row = conn.execute("SELECT * FROM orders WHERE order_id = ?", (order_id,)).fetchone()
    if row is None:
        return bad("order_id", "unknown order", 404)
    return jsonify(load(row))


@app.get("/orders")
def list_orders():
    with db("orders.db") as conn:
        rows = conn.execute("SELECT * FROM orders ORDER BY rowid").fetchall()
    return jsonify([load(r) for r in rows])


@app.get("/health")
def health():
    return jsonify({"service": "naive-order", "status": "ok", "pid": os.getpid()})


def on_status(event):
    """Record what the inventory decided about an order."""
    status = "RESERVED" if event.get("event_type") == "InventoryReserved" else "FAILED"
    with db("orders.db") as conn:
        conn.execute("UPDATE orders SET status = ? WHERE order_id = ?",
                     (status, event["order_id"]))


if __name__ == "__main__":
    setup()
    conn = connect()  # declare everything once before taking orders
    declare(conn.channel())
    conn.close()
    threading.Thread(target=consume_forever, args=("order_status", on_status),
                     daemon=True).start()
    app.run(host="127.0.0.1", port=PORT, threaded=True)
