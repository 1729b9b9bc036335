"""Direct AMQP access for the harness: forge messages, read queue depth, read the DLQ."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import pika
import pika.exceptions

from lab_services import topology
from lab_services.headers import (
    H_ATTEMPTS,
    H_ORIGINAL_EXCHANGE,
    H_ORIGINAL_QUEUE,
    H_ORIGINAL_ROUTING_KEY,
    H_REASON,
)


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


def order_copy(event: dict[str, Any], *, same_event_id: bool = True
               ) -> tuple[bytes, pika.BasicProperties]:
    """An OrderPlaced as the order service sends it: an exact copy, or one with a new event id."""
    payload = dict(event)
    if not same_event_id:
        payload["event_id"] = str(uuid.uuid4())
    props = pika.BasicProperties(delivery_mode=2, content_type="application/json",
                                 message_id=payload["event_id"],
                                 correlation_id=payload["order_id"], type="OrderPlaced")
    return json.dumps(payload).encode(), props


def republish_order(amqp_url: str, event: dict[str, Any], *, same_event_id: bool = True) -> None:
    """Publish an OrderPlaced again: an exact copy, or a hand-made one with a new event id."""
    body, props = order_copy(event, same_event_id=same_event_id)
    publish_raw(amqp_url, body, properties=props)


# pika raises these while building the frames, before anything reaches the broker.
_ENCODING_ERRORS = (pika.exceptions.ShortStringTooLong,
                    pika.exceptions.UnsupportedAMQPFieldException)


class Publisher:
    """One confirmed channel for many publishes, reopened (within `retry_for` seconds per
    message) when the broker goes away, blocks publishers, or nacks.

    Use it from one thread only (pika connections are not thread-safe).
    """

    def __init__(self, amqp_url: str, *, retry_for: float = 60.0,
                 blocked_timeout: float = 30.0) -> None:
        self.params = pika.URLParameters(amqp_url)
        # A memory alarm blocks publishers: give up on the connection after a while and
        # open a new one, instead of waiting for ever.
        self.params.blocked_connection_timeout = blocked_timeout
        self.retry_for = retry_for
        self._conn: pika.BlockingConnection | None = None
        self._ch: Any = None
        self.reconnects = 0

    def _channel(self) -> Any:
        if self._conn is None or not self._conn.is_open:
            self._conn = pika.BlockingConnection(self.params)
            self._ch = None
        if self._ch is None or not self._ch.is_open:
            self._ch = self._conn.channel()
            self._ch.confirm_delivery()
        return self._ch

    def publish(self, body: bytes, properties: pika.BasicProperties, *,
                exchange: str = topology.ORDER_EVENTS,
                routing_key: str = topology.KEY_ORDER_PLACED) -> None:
        """Publish one persistent message and wait for its confirm; retry (bounded) on failure."""
        give_up = time.monotonic() + self.retry_for
        delay = 0.1
        while True:
            try:
                self._channel().basic_publish(exchange, routing_key, body, properties)
                return
            except _ENCODING_ERRORS:
                raise  # the message itself cannot be sent: no retry will help
            except (pika.exceptions.AMQPError, OSError) as exc:
                self.close()
                self.reconnects += 1
                if time.monotonic() + delay > give_up:
                    raise ConnectionError(f"could not publish within {self.retry_for:.0f}s: "
                                          f"{exc!r}") from exc
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def close(self) -> None:
        """Close the connection (safe to call twice; the broker may already be gone)."""
        conn, self._conn, self._ch = self._conn, None, None
        if conn is not None and conn.is_open:
            with suppress(pika.exceptions.AMQPError, OSError):
                conn.close()


def depth(amqp_url: str, queue: str) -> int:
    """Messages ready in a queue right now (a passive declare: exact and current)."""
    with channel(amqp_url, confirm=False) as ch:
        return ch.queue_declare(queue, passive=True).method.message_count


def consumers(amqp_url: str, queue: str) -> int | None:
    """Consumers of a queue right now (a passive declare), or None if the queue is missing."""
    try:
        with channel(amqp_url, confirm=False) as ch:
            return ch.queue_declare(queue, passive=True).method.consumer_count
    except pika.exceptions.ChannelClosedByBroker:
        return None


def declared(amqp_url: str, name: str, *, exchange: bool = False) -> bool:
    """True if the queue (or the exchange) is declared now (a passive declare); False on 404."""
    try:
        with channel(amqp_url, confirm=False) as ch:
            if exchange:
                ch.exchange_declare(name, passive=True)
            else:
                ch.queue_declare(name, passive=True)
            return True
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code != 404:
            raise
        return False


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
            origin = dead_letter_origin(headers)
            out.append({
                "body": body.decode(errors="replace"),
                "reason": origin["reason"],
                "attempts": headers.get(H_ATTEMPTS, 0),
                "original_queue": origin["queue"],
                "routing_key": method.routing_key,
                "message_id": props.message_id,
                "correlation_id": props.correlation_id,
                "delivery_mode": props.delivery_mode,  # 2 persistent; 1 or None transient
                "headers": {k: _plain(v) for k, v in headers.items()},
            })
    finally:
        # Closing without acking puts every message we only looked at back, in order.
        if conn.is_open:
            conn.close()
    return out


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def dead_letter_origin(headers: dict[str, Any]) -> dict[str, Any]:
    """Why and from where a message was dead-lettered: the lab's own headers, else x-death.

    Returns reason, exchange, routing_key and queue (each None when unknown). The lab's
    services write `x-reject-reason` and `x-original-*`; the broker writes `x-death` (most
    recent death first) when it dead-letters by itself (a reject, an expiry, a delivery limit).
    """
    deaths = headers.get("x-death")
    death = deaths[0] if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict) \
        else {}
    keys = death.get("routing-keys")
    death_key = keys[0] if isinstance(keys, list) and keys else None
    pick = {
        "reason": (H_REASON, "reason"),
        "exchange": (H_ORIGINAL_EXCHANGE, "exchange"),
        "routing_key": (H_ORIGINAL_ROUTING_KEY, None),
        "queue": (H_ORIGINAL_QUEUE, "queue"),
    }
    origin = {}
    for name, (ours, broker_field) in pick.items():
        value = headers.get(ours)
        if value is None:
            value = death_key if broker_field is None else death.get(broker_field)
        origin[name] = _text(value)
    return origin


def _plain(value: Any) -> Any:
    """A header value as plain JSON-able data (bytes decoded, exotic types as text)."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value if isinstance(value, str | int | float | bool | type(None)) else str(value)
