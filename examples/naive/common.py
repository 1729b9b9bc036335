"""What the three naive services share: settings, the broker topology, publishing, consuming.

This is the first attempt many students write. It works on a good day. Each shortcut is
marked NAIVE, and README.md says which check of `python -m harness grade` catches it.
"""

import json
import logging
import os
import sqlite3
import time
import uuid
from datetime import UTC, datetime

import pika
import pika.exceptions

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672/%2F")
PORT = int(os.environ.get("PORT", "5000"))
DATA_DIR = os.environ.get("DATA_DIR", ".")

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
logging.getLogger("pika").setLevel(logging.WARNING)

DEAD_LETTERED = {"x-queue-type": "classic", "x-dead-letter-exchange": "dead_letters"}


def now():
    """The current time as an ISO 8601 UTC string."""
    return datetime.now(UTC).isoformat()


def new_id():
    """A fresh unique id."""
    return str(uuid.uuid4())


def db(name):
    """A new SQLite connection to this service's database file."""
    conn = sqlite3.connect(os.path.join(DATA_DIR, name), timeout=10)
    conn.row_factory = sqlite3.Row
    return conn


def connect():
    """A new blocking connection to the broker."""
    return pika.BlockingConnection(pika.URLParameters(AMQP_URL))


def declare(ch):
    """Declare the exchanges, queues and bindings of the contract (same arguments as the lab)."""
    ch.exchange_declare("order_events", "topic", durable=True)
    ch.exchange_declare("inventory_events", "topic", durable=True)
    ch.exchange_declare("dead_letters", "fanout", durable=True)
    for queue in ("order_placed", "inventory_reserved", "inventory_failed", "order_status"):
        ch.queue_declare(queue, durable=True, arguments=DEAD_LETTERED)
    ch.queue_declare("dlq", durable=True, arguments={"x-queue-type": "classic"})
    ch.queue_bind("order_placed", "order_events", "order.placed")
    ch.queue_bind("inventory_reserved", "inventory_events", "inventory.reserved")
    ch.queue_bind("inventory_failed", "inventory_events", "inventory.failed")
    ch.queue_bind("order_status", "inventory_events", "inventory.*")
    ch.queue_bind("dlq", "dead_letters", "#")


def publish(exchange, routing_key, event):
    """Publish one event.

    NAIVE: a new connection for every message, and no publisher confirms: if the broker
    dies a moment later, the message may never have reached the disk, and nobody knows.
    """
    conn = connect()
    try:
        conn.channel().basic_publish(
            exchange, routing_key, json.dumps(event),
            pika.BasicProperties(delivery_mode=2, content_type="application/json",
                                 message_id=event["event_id"], type=event["event_type"]))
    finally:
        conn.close()


def consume_forever(queue, handle):
    """Call handle(event) for every message of a queue; reconnect when the broker goes away.

    NAIVE: prefetch 1; the message is acked as soon as it parses, before the work is done;
    a message that does not parse is rejected without saying why.
    """
    log = logging.getLogger(queue)

    def on_message(ch, method, properties, body):
        try:
            event = json.loads(body)
            if not isinstance(event, dict) or "order_id" not in event:
                raise ValueError("not an event")
        except ValueError:
            ch.basic_reject(method.delivery_tag, requeue=False)  # NAIVE: no reason given
            return
        ch.basic_ack(method.delivery_tag)  # NAIVE: acked before the work is done
        try:
            handle(event)
        except Exception:
            log.exception("could not handle %s", event.get("order_id"))

    while True:
        try:
            conn = connect()
            ch = conn.channel()
            declare(ch)
            ch.basic_qos(prefetch_count=1)
            ch.basic_consume(queue, on_message)
            log.info("consuming %s", queue)
            ch.start_consuming()
        except pika.exceptions.AMQPError as exc:
            log.warning("lost the broker (%s); trying again in 1 s", exc.__class__.__name__)
            time.sleep(1)
