"""Naive notification service: one notification per inventory outcome."""

import os
import threading

from common import PORT, connect, consume_forever, db, declare, now
from flask import Flask, jsonify

app = Flask("naive-notification")


def setup():
    """Create the notifications table."""
    with db("notifications.db") as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS notifications (order_id TEXT PRIMARY KEY,"
                     " status TEXT, reason TEXT, message TEXT, event_id TEXT,"
                     " order_timestamp TEXT, outcome_timestamp TEXT, notified_at TEXT)")


def on_outcome(event):
    """Record the notification for an outcome (a second one for the same order is ignored)."""
    reserved = event.get("event_type") == "InventoryReserved"
    message = (f"Order {event['order_id']} confirmed." if reserved
               else f"Order {event['order_id']} could not be fulfilled: {event.get('reason')}")
    with db("notifications.db") as conn:
        conn.execute("INSERT OR IGNORE INTO notifications VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     (event["order_id"], "RESERVED" if reserved else "FAILED",
                      event.get("reason"), message, event.get("event_id"),
                      event.get("order_timestamp"), event.get("timestamp"), now()))


@app.get("/notifications")
def notifications():
    with db("notifications.db") as conn:
        rows = conn.execute("SELECT * FROM notifications ORDER BY rowid").fetchall()
    return jsonify([dict(r) for r in rows])


@app.get("/health")
def health():
    return jsonify({"service": "naive-notification", "status": "ok", "pid": os.getpid()})


if __name__ == "__main__":
    setup()
    conn = connect()
    declare(conn.channel())
    conn.close()
    for queue in ("inventory_reserved", "inventory_failed"):
        threading.Thread(target=consume_forever, args=(queue, on_outcome), daemon=True).start()
    app.run(host="127.0.0.1", port=PORT, threaded=True)
