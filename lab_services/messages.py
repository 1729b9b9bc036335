"""What flows through the bus: outgoing messages, deliveries, the copies made of them, and
the ways a publish can fail.

A dead letter or a retry is a *copy* of a delivery that the service republishes itself,
with the lab's headers saying why. Foreign headers are sanitised on the way (see
`headers.py`), and every reason is bounded, so the copy can always be published.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import pika

from lab_services import headers as h
from lab_services import topology as topo
from lab_services.retry import NO_RETRY, RetryPolicy


class BrokerUnavailable(RuntimeError):
    """The broker cannot take a message now (not connected, nacked, or no confirm in time)."""


class Unroutable(BrokerUnavailable):
    """The broker returned the message: no queue is bound to take it."""


class Unpublishable(ValueError):
    """pika could not encode the message (e.g. a property over 255 bytes); nothing was sent."""


PERSISTENT = pika.DeliveryMode.Persistent


@dataclass(frozen=True)
class Outgoing:
    """A message to publish: where to, the body, and its AMQP properties."""

    exchange: str
    routing_key: str
    body: bytes
    properties: pika.BasicProperties = field(
        default_factory=lambda: pika.BasicProperties(delivery_mode=PERSISTENT)
    )
    # The queues the message is meant for, when there are several: `mandatory` returns a
    # message only if it reaches no queue at all, so each of these is checked on the
    # channel just before the publish, and a missing one stops it before it is routed.
    destinations: tuple[str, ...] = ()


@dataclass
class Delivery:
    """A message handed to a consumer's handler."""

    queue: str
    exchange: str
    routing_key: str
    body: bytes
    properties: pika.BasicProperties
    redelivered: bool
    delivery_tag: int
    # The handler may note what it learned (e.g. the order id) for the before-ack hook.
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, Any]:
        """The message headers (never None), as sent by whoever published it."""
        raw = self.properties.headers
        return dict(raw) if isinstance(raw, dict) else {}

    @property
    def attempts(self) -> int:
        """How many times a handler has already failed on this message (untrusted header)."""
        return h.attempts_of(self.headers)


Handler = Callable[[Delivery], list[Outgoing]]
BeforeAck = Callable[[Delivery], None]


@dataclass
class Consumer:
    """A queue the bus consumes, with its handler and what to do when it fails."""

    queue: str
    handler: Handler
    retry: RetryPolicy = NO_RETRY
    before_ack: BeforeAck | None = None
    unit_of_work: Callable[[], AbstractContextManager] | None = None
    # Work done per delivery *before* the unit of work opens (parsing, the kitchen's time),
    # so that it never holds the store's write lock that competing consumers share.
    prepare: BeforeAck | None = None


def copy_properties(props: pika.BasicProperties, headers: dict[str, Any]) -> pika.BasicProperties:
    """Persistent properties for a copy of a message, with these headers."""
    return pika.BasicProperties(
        content_type=h.short_str(props.content_type) or "application/json",
        delivery_mode=PERSISTENT,
        message_id=h.short_str(props.message_id),
        correlation_id=h.short_str(props.correlation_id),
        timestamp=props.timestamp if isinstance(props.timestamp, int)
        and 0 <= props.timestamp < 2 ** 63 else None,
        type=h.short_str(props.type),
        app_id=h.short_str(props.app_id),
        headers=headers,
    )


def _origin(delivery: Delivery, headers: dict[str, Any]) -> dict[str, str]:
    """Where a message first came from: kept across retry tiers, so a replay goes there."""
    came_back_from_retry = delivery.exchange == "" and h.H_ORIGINAL_EXCHANGE in headers
    if came_back_from_retry:
        return {k: h.short_str(headers.get(k)) or "" for k in
                (h.H_ORIGINAL_EXCHANGE, h.H_ORIGINAL_ROUTING_KEY, h.H_ORIGINAL_QUEUE)}
    return {h.H_ORIGINAL_EXCHANGE: h.short_str(delivery.exchange) or "",
            h.H_ORIGINAL_ROUTING_KEY: h.short_str(delivery.routing_key) or "",
            h.H_ORIGINAL_QUEUE: h.short_str(delivery.queue) or ""}


def dead_letter(delivery: Delivery, reason: str, *, attempts: int | None = None) -> Outgoing:
    """The copy of a delivery that goes to the dead-letter exchange, with the reason."""
    headers = h.clean_headers(delivery.headers)
    headers.update(_origin(delivery, headers))
    headers[h.H_REASON] = h.bounded(reason)
    if attempts is not None:
        headers[h.H_ATTEMPTS] = attempts
    return Outgoing(topo.DEAD_LETTERS, delivery.routing_key, delivery.body,
                    copy_properties(delivery.properties, headers))


def bare_dead_letter(delivery: Delivery, reason: str) -> Outgoing:
    """A dead letter with none of the original properties: the copy that always encodes."""
    headers = {
        h.H_REASON: h.bounded(reason),
        h.H_ORIGINAL_EXCHANGE: h.short_str(delivery.exchange) or "",
        h.H_ORIGINAL_ROUTING_KEY: h.short_str(delivery.routing_key) or "",
        h.H_ORIGINAL_QUEUE: h.short_str(delivery.queue) or "",
    }
    props = pika.BasicProperties(content_type="application/octet-stream",
                                 delivery_mode=PERSISTENT, headers=headers)
    return Outgoing(topo.DEAD_LETTERS, "", delivery.body, props)


def retry_copy(delivery: Delivery, queue: str, attempts: int, error: str) -> Outgoing:
    """The copy of a delivery that waits in a retry tier before its next attempt."""
    headers = h.clean_headers(delivery.headers)
    headers.update(_origin(delivery, headers))
    headers.update({h.H_ATTEMPTS: attempts, h.H_LAST_ERROR: h.bounded(error, 300)})
    return Outgoing("", queue, delivery.body, copy_properties(delivery.properties, headers))
