"""An original-lab-like shop (tests only): the campus-food lab this project grew from.

pika and Flask, one file per service in the original (one argument here), fixed ports
5001-5003, the broker from RABBITMQ_HOST/PORT/USER/PASSWORD. Its real defects, on purpose:
no GET /reservations, no publisher confirms, consumers that never reconnect (their thread
dies while /health says 200), an in-memory processed set, a poison message requeued for
ever, and everything kept in memory.
"""

import datetime
import json
import os
import sys
import threading
import uuid

import pika
from flask import Flask, jsonify, request

SERVICE = sys.argv[1]
PORTS = {"order": 5001, "inventory": 5002, "notification": 5003}
BINDINGS = {"order_placed": ("order_events", "order.placed"),
            "inventory_reserved": ("inventory_events", "inventory.reserved"),
            "inventory_failed": ("inventory_events", "inventory.failed")}
app = Flask(SERVICE)
orders, notes, processed = {}, [], set()
stock = {f"item_{i}": int(os.environ.get("INITIAL_STOCK", "100")) for i in range(1, 6)}
initial = dict(stock)


def connect():
    creds = pika.PlainCredentials(os.environ.get("RABBITMQ_USER", "guest"),
                                  os.environ.get("RABBITMQ_PASSWORD", "guest"))
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        os.environ.get("RABBITMQ_HOST", "localhost"),
        int(os.environ.get("RABBITMQ_PORT", "5672")), credentials=creds))
    ch = conn.channel()
    for queue, (exchange, key) in BINDINGS.items():
        ch.exchange_declare(exchange, "topic", durable=True)
        ch.queue_declare(queue, durable=True)
        ch.queue_bind(queue, exchange, key)
    return conn, ch


def publish(exchange, key, event):  # a connection per message, no confirms
    conn, ch = connect()
    ch.basic_publish(exchange, key, json.dumps(event),
                     pika.BasicProperties(delivery_mode=2, content_type="application/json"))
    conn.close()


def now():
    return datetime.datetime.now(datetime.UTC).isoformat()


def on_order(ch, method, _props, body):
    try:
        event = json.loads(body)
        if event["order_id"] not in processed:
            short = [i for i in event["items"] if stock.get(i["item_id"], 0) < i["quantity"]]
            for line in event["items"] if not short else []:
                stock[line["item_id"]] -= line["quantity"]
            kind = "failed" if short else "reserved"
            publish("inventory_events", f"inventory.{kind}", {
                "event_id": str(uuid.uuid4()), "event_type": f"Inventory{kind.title()}",
                "timestamp": now(), "order_id": event["order_id"], "items": event["items"],
                "reason": "out of stock" if short else None})
            processed.add(event["order_id"])
        ch.basic_ack(method.delivery_tag)
    except Exception:
        ch.basic_nack(method.delivery_tag, requeue=True)


def on_outcome(ch, method, _props, body):
    event = json.loads(body)
    notes.append({"order_id": event["order_id"], "reason": event.get("reason"),
                  "status": "FAILED" if event.get("reason") else "RESERVED"})
    ch.basic_ack(method.delivery_tag)


def consume(queues, handler):
    _conn, ch = connect()
    for queue in queues:
        ch.basic_consume(queue, handler)
    ch.start_consuming()  # a lost connection ends this thread, and nothing restarts it


@app.post("/order")
def place():
    body = request.get_json()
    order = {"order_id": str(uuid.uuid4()), "user_id": body["user_id"], "items": body["items"],
             "total_amount": sum(i["quantity"] * i["price"] for i in body["items"]),
             "status": "PENDING", "created_at": now(), "event_id": str(uuid.uuid4())}
    orders[order["order_id"]] = order
    publish("order_events", "order.placed", {**order, "event_type": "OrderPlaced",
                                             "timestamp": order["created_at"]})
    return jsonify(order), 201


@app.get("/order/<order_id>")
def one(order_id):
    return (jsonify(orders[order_id]), 200) if order_id in orders else ("not found", 404)


for path, view in {"/orders": lambda: list(orders.values()), "/notifications": lambda: notes,
                   "/inventory": lambda: {k: {"stock": v, "initial": initial[k]}
                                          for k, v in stock.items()},
                   "/health": lambda: {"status": "ok"}}.items():
    app.add_url_rule(path, path, lambda view=view: jsonify(view()))

if __name__ == "__main__":
    if SERVICE == "inventory":
        threading.Thread(target=consume, args=(["order_placed"], on_order), daemon=True).start()
    if SERVICE == "notification":
        threading.Thread(target=consume, args=(["inventory_reserved", "inventory_failed"],
                                               on_outcome), daemon=True).start()
    app.run(host="127.0.0.1", port=PORTS[SERVICE], threaded=True)
