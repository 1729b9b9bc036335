"""AMQP headers: the lab's own names, and safe handling of headers that other clients set.

Headers arrive from any client. pika decodes some values it cannot encode again (a double,
a decimal beyond 32 bits), refuses names and short strings over 255 bytes, and, before
the patch in `pika_compat`, aborted the whole connection on a timestamp past the year 9999.
A service that copies a foreign header into a dead letter must therefore sanitise it
first, or one message can stop a consumer for good.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import struct
from typing import Any

import pika.data
from pika import exceptions as pika_exceptions

# Headers the lab writes on messages it dead-letters or retries itself.
H_REASON = "x-reject-reason"
H_ATTEMPTS = "x-attempts"
H_LAST_ERROR = "x-last-error"
H_ORIGINAL_EXCHANGE = "x-original-exchange"
H_ORIGINAL_ROUTING_KEY = "x-original-routing-key"
H_ORIGINAL_QUEUE = "x-original-queue"
LAB_HEADERS = (H_REASON, H_ATTEMPTS, H_LAST_ERROR, H_ORIGINAL_EXCHANGE,
               H_ORIGINAL_ROUTING_KEY, H_ORIGINAL_QUEUE)

SHORT_STR_MAX = 255  # AMQP short strings: header names, ids, routing keys
MAX_REASON_CHARS = 500
MAX_HEADER_VALUE_BYTES = 4096
MAX_HEADERS = 64
MAX_DEPTH = 4
MAX_ATTEMPTS = 1_000_000
# The whole header table of a copy: well under the broker's smallest frame_max (128 KB on
# 3.x), or the broker closes the connection with FRAME_ERROR and the copy loops forever.
MAX_TABLE_BYTES = 16 * 1024
# Headers the broker owns: copied into a new message they can corrupt a queue (a forged
# x-death array broke a retry queue on 3.10), so copies never carry them.
BROKER_OWNED = ("x-death", "x-first-death-", "x-last-death-", "x-delivery-count", "CC", "BCC",
                "x-received-from")
# Tables and arrays nested deeper than this are not decoded (pika's decoder recurses).
MAX_DECODE_DEPTH = 32


def bounded(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """Text cut to a limit, marked as cut, so no reason ever echoes unbounded input."""
    if len(text) <= limit:
        return text
    suffix = f"... [{len(text)} chars]"
    return text[: limit - len(suffix)] + suffix


def short_str(value: Any) -> str | None:
    """A value usable as an AMQP short string (at most 255 UTF-8 bytes), or None."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    raw = text.encode("utf-8", "replace")
    if len(raw) <= SHORT_STR_MAX:
        return text
    return raw[:SHORT_STR_MAX].decode("utf-8", "ignore")


def attempts_of(headers: dict[str, Any] | None) -> int:
    """The lab's attempt count from untrusted headers: 0 unless a sane non-negative int."""
    value = (headers or {}).get(H_ATTEMPTS, 0)
    if isinstance(value, bool):
        return 0
    if isinstance(value, bytes):
        value = value.decode("ascii", "ignore")
    if isinstance(value, str):
        value = value.strip()
        if not value.isdigit() or len(value) > 7:
            return 0
        value = int(value)
    if isinstance(value, int) and 0 <= value <= MAX_ATTEMPTS:
        return value
    return 0


def _clean(value: Any, depth: int) -> Any:
    """A header value pika can encode again: unsupported types become text, big ones cut."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -(2 ** 63) <= value < 2 ** 63 else str(value)
    if isinstance(value, str):
        raw = value.encode("utf-8", "replace")
        return value if len(raw) <= MAX_HEADER_VALUE_BYTES else bounded(value, 1000)
    if isinstance(value, bytes):
        return value[:MAX_HEADER_VALUE_BYTES]
    if isinstance(value, _dt.datetime):
        return value
    if isinstance(value, float | decimal.Decimal):
        return repr(value) if isinstance(value, float) else str(value)
    if depth >= MAX_DEPTH:
        return "[nested too deep]"
    if isinstance(value, dict):
        return clean_headers(value, depth + 1)
    if isinstance(value, list | tuple):
        return [_clean(v, depth + 1) for v in list(value)[:MAX_HEADERS]]
    return bounded(repr(value), 200)


def clean_headers(headers: dict[str, Any] | None, depth: int = 0) -> dict[str, Any]:
    """Foreign headers made safe to copy into a new message (names bounded, values encodable)."""
    out: dict[str, Any] = {}
    for name, value in list((headers or {}).items())[:MAX_HEADERS]:
        key = name if isinstance(name, str) else str(name)
        if len(key.encode("utf-8", "replace")) > SHORT_STR_MAX:
            continue
        if depth == 0 and key.startswith(BROKER_OWNED):
            continue
        out[key] = _clean(value, depth)
    if depth == 0 and not encodable(out):
        # Something still slipped through: keep only plain text and numbers.
        out = {k: v for k, v in out.items() if isinstance(v, str | int) and encodable({k: v})}
    if depth == 0 and table_size(out) > MAX_TABLE_BYTES:
        out = {}  # a copy must stay small enough to publish: the reason matters more
    return out


def table_size(headers: dict[str, Any]) -> int:
    """Encoded size of a header table in bytes (0 if pika cannot encode it)."""
    pieces: list[bytes] = []
    try:
        return pika.data.encode_table(pieces, headers)
    except (pika_exceptions.AMQPError, struct.error, TypeError, ValueError, OverflowError,
            UnicodeError):
        return 0


def encodable(headers: dict[str, Any]) -> bool:
    """True if pika can encode this header table."""
    try:
        pika.data.encode_table([], headers)
    except (pika_exceptions.AMQPError, struct.error, TypeError, ValueError, OverflowError,
            UnicodeError):
        return False
    return True
