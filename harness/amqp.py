"""Direct AMQP access for the harness: forge messages, read queue depth, read the DLQ."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pika
import pika.exceptions

from lab_services import topology
from lab_services.bus import H_ATTEMPTS, H_ORIGINAL_QUEUE, H_REASON


@contextmanager
def channel(amqp_url: str, confirm: bool = True) -> Iterator[Any]:
    """A short-lived blocking channel (with publisher confirms by default)."""
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        ch = conn.channel()
        if confirm:
            ch.confirm_delivery()
        yield ch
    finally:
        if conn.is_open:
            conn.close()


def publish_raw(amqp_url: str, body: bytes | str, *, exchange: str = topology.ORDER_EVENTS,
                routing_key: str = topology.KEY_ORDER_PLACED,
                properties: pika.BasicProperties | None = None) -> None:
    """Publish one message exactly as given, persistent and confirmed."""
    if isinstance(body, str):
        body = body.encode()
    with channel(amqp_url) as ch:
        ch.basic_publish(exchange, routing_key, body,
                         properties or pika.BasicProperties(delivery_mode=2))


def republish_order(amqp_url: str, event: dict[str, Any], *, same_event_id: bool = True) -> None:
    """Publish an OrderPlaced again: an exact copy, or a hand-made one with a new event id."""
    payload = dict(event)
    if not same_event_id:
        import uuid
        payload["event_id"] = str(uuid.uuid4())
    props = pika.BasicProperties(delivery_mode=2, content_type="application/json",
                                 message_id=payload["event_id"],
                                 correlation_id=payload["order_id"])
    publish_raw(amqp_url, json.dumps(payload), properties=props)


def depth(amqp_url: str, queue: str) -> int:
    """Messages ready in a queue right now (a passive declare: exact and current)."""
    with channel(amqp_url, confirm=False) as ch:
        return ch.queue_declare(queue, passive=True).method.message_count


def read_queue(amqp_url: str, queue: str = topology.DLQ, *, remove: bool = False,
               limit: int = 10_000) -> list[dict[str, Any]]:
    """Read a queue's messages (default the DLQ) with their lab headers; keep them unless told."""
    out = []
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        ch = conn.channel()
        for _ in range(limit):
            method, props, body = ch.basic_get(queue, auto_ack=remove)
            if method is None:
                break
            headers = dict(props.headers or {})
            deaths = headers.get("x-death") or []
            out.append({
                "body": body.decode(errors="replace"),
                "reason": headers.get(H_REASON) or (deaths[0].get("reason") if deaths else None),
                "attempts": headers.get(H_ATTEMPTS, 0),
                "original_queue": headers.get(H_ORIGINAL_QUEUE)
                or (deaths[0].get("queue") if deaths else None),
                "routing_key": method.routing_key,
                "message_id": props.message_id,
                "correlation_id": props.correlation_id,
                "headers": {k: _plain(v) for k, v in headers.items()},
            })
    finally:
        # Closing without acking puts every message we only looked at back, in order.
        if conn.is_open:
            conn.close()
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value if isinstance(value, str | int | float | bool | type(None)) else str(value)
