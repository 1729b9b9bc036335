"""Reading the dead letters: one `DeadLetter` per message, every field bounded and escaped."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import pika
import pika.exceptions

from harness.amqp import _plain, dead_letter_origin
from lab_services import pika_compat, topology
from lab_services.headers import (
    H_ATTEMPTS,
    LAB_HEADERS,
    SHORT_STR_MAX,
)

# Read what the services read: a timestamp header past year 9999 decodes as an integer
# instead of making pika drop the connection (see lab_services.pika_compat).
pika_compat.install()

# Headers that record a death; a replayed message starts afresh without them.
DEAD_LETTER_HEADERS = frozenset({
    *LAB_HEADERS, "x-death", "x-first-death-exchange", "x-first-death-queue",
    "x-first-death-reason", "x-last-death-exchange", "x-last-death-queue",
    "x-last-death-reason", "x-delivery-count",
})
MAX_PARSE_BYTES = 64 * 1024  # a real order is a few hundred bytes; bigger is not parsed


def safe(value: Any, limit: int = 120) -> str:
    """Text fit for a terminal: control characters escaped, at most `limit` characters."""
    text = value if isinstance(value, str) else str(value)
    cut = len(text) > limit
    text = text[:limit]
    # Escape everything non-printable (ANSI escapes, newlines, bidi controls) as \\x.., \\u....
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
    return text + (f"... ({len(value) if isinstance(value, str) else '?'} chars)" if cut else "")


@dataclass
class DeadLetter:
    """One message in the DLQ as read, with where it came from and why it died."""

    index: int
    reason: str | None
    exchange: str | None
    routing_key: str | None
    queue: str | None
    attempts: int | None
    order_id: str | None
    message_id: str | None
    body_bytes: int
    headers: dict[str, Any] = field(repr=False)
    body: bytes = field(repr=False)  # the first `keep` bytes only (see describe)

    @property
    def replayable(self) -> bool:
        """True if the message says where to send it back to."""
        return (self.exchange is not None and self.routing_key is not None
                and len(self.exchange.encode()) <= SHORT_STR_MAX
                and len(self.routing_key.encode()) <= SHORT_STR_MAX)

    def summary(self) -> dict[str, Any]:
        """The listing fields as JSON-able data (no headers, no body)."""
        d = asdict(self)
        d.pop("headers")
        d.pop("body")
        return d


def _attempts(value: Any) -> int | None:
    # Untrusted: only a plain integer (not a bool, not a string) counts.
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _order_id(body: bytes, props: pika.BasicProperties) -> str | None:
    if len(body) <= MAX_PARSE_BYTES:
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            payload = None
        if isinstance(payload, dict) and isinstance(payload.get("order_id"), str):
            return payload["order_id"]
    cid = props.correlation_id
    return cid.decode(errors="replace") if isinstance(cid, bytes) else cid


def describe(index: int, props: pika.BasicProperties, body: bytes, *,
             keep: int = MAX_PARSE_BYTES) -> DeadLetter:
    """Read one dead letter's reason, origin, attempts and order id; keep `keep` body bytes.

    Keeping only a prefix bounds memory when a listing meets a DLQ full of huge bodies.
    """
    headers = props.headers if isinstance(props.headers, dict) else {}
    origin = dead_letter_origin(headers)
    mid = props.message_id
    return DeadLetter(
        index=index, reason=origin["reason"], exchange=origin["exchange"],
        routing_key=origin["routing_key"], queue=origin["queue"],
        attempts=_attempts(headers.get(H_ATTEMPTS)), order_id=_order_id(body, props),
        message_id=mid.decode(errors="replace") if isinstance(mid, bytes) else mid,
        body_bytes=len(body), headers={str(k): _plain(v) for k, v in headers.items()},
        body=body[:keep],
    )


def connect(amqp_url: str) -> pika.BlockingConnection:
    """A blocking connection for one dead-letter command (one attempt, short timeouts)."""
    params = pika.URLParameters(amqp_url)
    params.connection_attempts = 1
    params.socket_timeout = 5
    return pika.BlockingConnection(params)


class Unreadable(RuntimeError):
    """Message `index` could not be decoded by pika; `dead` holds those read before it."""

    def __init__(self, index: int, cause: Exception, dead: list[DeadLetter]) -> None:
        super().__init__(f"message #{index} cannot be decoded ({safe(cause, 200)}); "
                         f"`dlq drop {index}` removes it")
        self.index = index
        self.dead = dead


def get_one(ch: Any, queue: str, index: int, dead: list[DeadLetter], auto_ack: bool = False):
    """One `basic_get` from `queue`, or `Unreadable` if pika cannot decode message `index`."""
    try:
        return ch.basic_get(queue, auto_ack=auto_ack)
    except pika.exceptions.StreamLostError as exc:
        # pika drops the whole connection when it cannot decode a frame (e.g. a timestamp
        # header past year 9999); the message stays first in line for every reader.
        raise Unreadable(index, exc, dead) from exc


def read(amqp_url: str, *, queue: str = topology.DLQ, limit: int = 1000,
         keep: int = MAX_PARSE_BYTES) -> list[DeadLetter]:
    """The first `limit` dead letters, left in the queue (read unacked, then given back).

    Raises Unreadable (with the messages read before it) at one pika cannot decode.
    """
    out: list[DeadLetter] = []
    conn = connect(amqp_url)
    try:
        ch = conn.channel()
        for index in range(1, limit + 1):
            method, props, body = get_one(ch, queue, index, out)
            if method is None:
                break
            out.append(describe(index, props, body, keep=keep))
    finally:
        # Closing without an ack gives every message back to the queue, in its place.
        if conn.is_open:
            conn.close()
    return out


def show(amqp_url: str, index: int, *, queue: str = topology.DLQ,
         keep: int = MAX_PARSE_BYTES) -> DeadLetter | None:
    """Dead letter number `index` (1-based, as `list` numbers them), or None."""
    if index < 1:
        return None
    found = read(amqp_url, queue=queue, limit=index, keep=keep)
    return found[index - 1] if len(found) >= index else None


def drop(amqp_url: str, index: int, *, queue: str = topology.DLQ) -> DeadLetter | None:
    """Remove dead letter number `index`, readable or not; return it if it could be read.

    The messages before it are held unacked on one channel (then given back), so a second
    channel's auto-acked get takes exactly message `index`.
    """
    if index < 1:
        raise ValueError("index counts from 1")
    conn = connect(amqp_url)
    try:
        hold = conn.channel()
        before: list[DeadLetter] = []
        for i in range(1, index):
            method, props, body = get_one(hold, queue, i, before)
            if method is None:
                return None
        take = conn.channel()
        try:
            method, props, body = take.basic_get(queue, auto_ack=True)
        except pika.exceptions.StreamLostError:
            return None  # it could not be decoded, but the broker has let it go
        return describe(index, props, body) if method is not None else None
    finally:
        if conn.is_open:
            conn.close()


def purge(amqp_url: str, *, queue: str = topology.DLQ) -> int:
    """Empty the DLQ; return how many messages were dropped."""
    conn = connect(amqp_url)
    try:
        return conn.channel().queue_purge(queue).method.message_count
    finally:
        if conn.is_open:
            conn.close()
