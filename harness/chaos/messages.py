"""The malformed-message catalogue: hostile messages for order.placed, each tagged so that
the checker finds it in the DLQ. The one catalogue: the chaos flood draws from `KINDS`, the
malformed and dlq scenarios (through harness.faults) publish the `TAUGHT` ones, and a new
kind is one branch of `_body` plus its name in `KINDS`.

Every kind is a message a careless or hostile publisher could send. Each carries its tag
twice: as `message_id` and in the `x-chaos-tag` header, because a body may not survive
(invalid UTF-8, 80 KB) and a service may sanitise what it dead-letters.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pika

from lab_services import events

TAG_HEADER = "x-chaos-tag"
TAG_PREFIX = "chaos-bad-"
_TAG_IN_TEXT = re.compile(TAG_PREFIX + r"[0-9]{6}")


def tag(n: int) -> str:
    """The tag of the n-th malformed message of a run (fixed width: no tag prefixes another)."""
    return f"{TAG_PREFIX}{n:06d}"


def _order(order_id: str, **overrides: Any) -> dict[str, Any]:
    event = {"event_id": f"ev-{order_id}", "event_type": "OrderPlaced",
             "timestamp": events.now_iso(), "order_id": order_id, "user_id": "chaos",
             "items": [{"item_id": "item_1", "quantity": 1, "price": 10.0}],
             "total_amount": 10.0}
    event.update(overrides)
    return event


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _body(kind: str, t: str) -> bytes:
    oid = f"ORD-{t}"
    if kind == "not_json":
        return b'{"event_type": "OrderPlaced", "order_id": "' + oid.encode() + b'", oops'
    if kind == "not_object":
        return _json([oid, "OrderPlaced", 1])
    if kind == "unknown_type":
        return _json(_order(oid, event_type="OrderTeleported"))
    if kind == "missing_fields":
        # The tag stays in the body (as the user id): a service that dead-letters the body
        # alone, without the headers, still leaves the checker something to find.
        order = _order(oid, user_id=oid)
        del order["order_id"], order["event_id"]
        return _json(order)
    if kind == "negative_quantity":
        return _json(_order(oid, items=[{"item_id": "item_1", "quantity": -3, "price": 10.0}]))
    if kind == "huge_quantity":
        # 10**400 is a valid JSON integer, and Python parses it exactly.
        body = _json(_order(oid, items=[{"item_id": "item_1", "quantity": 7, "price": 10.0}]))
        return body.replace(b'"quantity": 7', b'"quantity": 1' + b"0" * 400)
    if kind == "quantity_1e308":
        return _json(_order(oid, items=[{"item_id": "item_1", "quantity": 1e308,
                                         "price": 10.0}]))
    if kind == "oversize":
        return _json(_order(oid, padding="x" * 80 * 1024))
    if kind == "long_order_id":
        # Valid on its face; but an order id of 300 bytes cannot be a correlation_id
        # (an AMQP short string), which a service copying it into its output would do.
        return _json(_order(oid + "-" + "L" * 300))
    if kind == "float_header":
        return _json(_order(oid, items="not a list"))
    if kind == "long_message_id":
        return _json(_order(oid, items=[]))
    if kind == "deep_nesting":
        depth = 30_000
        return (b'{"event_type": "OrderPlaced", "order_id": "' + oid.encode()
                + b'", "items": ' + b"[" * depth + b"]" * depth + b"}")
    if kind == "invalid_utf8":
        return b'{"event_type": "OrderPlaced", "order_id": "' + oid.encode() + b'\xff\xfe\xc3"}'
    if kind == "wrong_types":
        return _json(_order(oid, items=[{"item_id": "item_1", "quantity": "two",
                                         "price": "ten"}], total_amount="lots"))
    raise ValueError(f"unknown malformed kind {kind!r}")


# Every kind the flood draws from (at least eight, as the lab promises).
KINDS: tuple[str, ...] = (
    "not_json", "not_object", "unknown_type", "missing_fields", "negative_quantity",
    "huge_quantity", "quantity_1e308", "oversize", "long_order_id", "float_header",
    "long_message_id", "deep_nesting", "invalid_utf8", "wrong_types",
)
# The kinds the malformed and dlq scenarios publish, one each: the lab's lesson on what a
# consumer must refuse (any AMQP client can send them, so any implementation can be tested).
TAUGHT: tuple[str, ...] = ("not_json", "missing_fields", "wrong_types", "unknown_type",
                           "oversize")


def malformed_message(kind: str, n: int) -> tuple[bytes, pika.BasicProperties]:
    """The body and properties of the n-th malformed message, of the given kind."""
    t = tag(n)
    headers: dict[str, Any] = {TAG_HEADER: t, "x-chaos-kind": kind}
    message_id = t
    if kind == "float_header":
        # pika cannot send a float header; the management API can (see VIA_MANAGEMENT), and
        # what arrives decodes fine but may not encode again (in a dead-letter copy, say).
        headers["x-chaos-float"] = 1e30
    if kind == "long_message_id":
        # 255 bytes is the most an AMQP short string holds; a long header value rides along.
        message_id = (t + "-" + "M" * 255)[:255]
        headers["x-chaos-long"] = "H" * 4096
    props = pika.BasicProperties(delivery_mode=2, content_type="application/json",
                                 message_id=message_id, type="OrderPlaced", headers=headers)
    return _body(kind, t), props


# Kinds that only a client other than pika can send: published through the management API.
VIA_MANAGEMENT = frozenset({"float_header"})


def management_properties(props: pika.BasicProperties) -> dict[str, Any]:
    """The properties of a malformed message in the management API's JSON shape."""
    fields = ("delivery_mode", "content_type", "message_id", "type", "headers")
    return {f: getattr(props, f) for f in fields if getattr(props, f) is not None}


def tag_of(message: dict[str, Any]) -> str | None:
    """The chaos tag of a message read from a queue (harness.amqp.read_queue row), if any."""
    header = (message.get("headers") or {}).get(TAG_HEADER)
    if isinstance(header, str) and header.startswith(TAG_PREFIX):
        return header[:len(TAG_PREFIX) + 6]
    for text in (message.get("message_id") or "", (message.get("body") or "")[:200]):
        found = _TAG_IN_TEXT.search(text)
        if found:
            return found.group(0)
    return None


def poison_message(kind: str, order_id: str) -> tuple[bytes, pika.BasicProperties]:
    """The body and properties of a poison order (harness.chaos.schedule's POISON kinds).

    "hostile": valid in every field but one quantity, 2**63: an integer above zero that
    passes a type check, yet past the contract's 1..1000 (and a 64-bit column). "crash": a
    valid order, poison only to a lab inventory told to crash on its id (LAB_CRASH_AT).
    """
    quantity = 2**63 if kind == "hostile" else 1
    order = _order(order_id, user_id="chaos-poison",
                   items=[{"item_id": "item_1", "quantity": quantity, "price": 10.0}])
    props = pika.BasicProperties(delivery_mode=2, content_type="application/json",
                                 message_id=order["event_id"], correlation_id=order_id,
                                 type="OrderPlaced", headers={"x-chaos-poison": kind})
    return _json(order), props
