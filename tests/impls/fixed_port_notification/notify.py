"""A notification service in plain pika and http.server, outside the lab's code.

It reads its broker from RABBIT_HOST, RABBIT_PORT, RABBIT_USER and RABBIT_PASSWORD (no
vhost: it always uses the default one) and listens on the fixed port 5003.
"""

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pika
import pika.exceptions

notes, lock = {}, threading.Lock()
QUEUES = ("inventory_reserved", "inventory_failed")
ARGS = {"x-queue-type": "classic", "x-dead-letter-exchange": "dead_letters"}


class Http(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path == "/health":
            body = {"status": "ok"}
        elif self.path == "/notifications":
            with lock:
                body = list(notes.values())
        else:
            self.send_error(404)
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def on_message(ch, method, properties, body):
    try:
        event = json.loads(body)
        order_id = event["order_id"]
    except (ValueError, KeyError, TypeError):
        ch.basic_reject(method.delivery_tag, requeue=False)
        return
    with lock:
        notes.setdefault(order_id, {
            "order_id": order_id, "status": "RESERVED" if method.routing_key.endswith(
                "reserved") else "FAILED", "reason": event.get("reason")})
    ch.basic_ack(method.delivery_tag)  # after the notification is recorded


def consume():
    credentials = pika.PlainCredentials(os.environ["RABBIT_USER"], os.environ["RABBIT_PASSWORD"])
    params = pika.ConnectionParameters(os.environ["RABBIT_HOST"], int(os.environ["RABBIT_PORT"]),
                                       credentials=credentials)
    while True:
        try:
            ch = pika.BlockingConnection(params).channel()
            ch.exchange_declare("inventory_events", "topic", durable=True)
            for queue in QUEUES:
                ch.queue_declare(queue, durable=True, arguments=ARGS)
                ch.queue_bind(queue, "inventory_events", queue.replace("_", "."))
                ch.basic_consume(queue, on_message)
            ch.start_consuming()
        except pika.exceptions.AMQPError as exc:
            print(f"broker lost ({exc.__class__.__name__}); again in 1 s", flush=True)
            time.sleep(1)


if __name__ == "__main__":
    threading.Thread(target=consume, daemon=True).start()
    ThreadingHTTPServer(("127.0.0.1", 5003), Http).serve_forever()
