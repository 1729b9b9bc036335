"""The lab's events on the wire: types, envelopes, and the validation that guards consumers.

The wire format is the original lab's flat JSON, so its scripts keep working:

    OrderPlaced:   event_id, event_type, timestamp, order_id, user_id, items, total_amount
    Inventory*:    event_id, event_type, timestamp, order_id, items, reason

Every problem with a message becomes an `InvalidEvent` whose `reason` names the field, so a
consumer can dead-letter the message with that reason and go on.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

ORDER_PLACED = "OrderPlaced"
INVENTORY_RESERVED = "InventoryReserved"
INVENTORY_FAILED = "InventoryFailed"
EVENT_TYPES = (ORDER_PLACED, INVENTORY_RESERVED, INVENTORY_FAILED)

# A real order is a few hundred bytes; anything this large is a mistake or an attack.
MAX_EVENT_BYTES = 64 * 1024
MAX_ITEMS = 100
# Ids end up in AMQP properties (short strings, at most 255 bytes) and in reasons: bound
# them well below that. The original lab's ids are 21 (orders) and 36 (events) characters.
MAX_ID_LENGTH = 64
MAX_QUANTITY = 1000
MAX_PRICE = 100_000.0
MAX_TOTAL = MAX_ITEMS * MAX_QUANTITY * MAX_PRICE
MAX_REASON_LENGTH = 500


class InvalidEvent(ValueError):
    """A message that is not a valid lab event; `reason` says why, naming the field."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Item:
    """One line of an order."""

    item_id: str
    quantity: int
    price: float

    def to_dict(self) -> dict[str, Any]:
        """The item as wire JSON."""
        return {"item_id": self.item_id, "quantity": self.quantity, "price": self.price}


@dataclass(frozen=True)
class Event:
    """A validated event: its type, ids and the full flat payload."""

    event_type: str
    event_id: str
    order_id: str
    timestamp: str
    items: tuple[Item, ...]
    payload: dict[str, Any]
    # The wire JSON when the event was built here and encoded already (never compared).
    wire: bytes | None = field(default=None, compare=False, repr=False)

    @property
    def user_id(self) -> str | None:
        """The ordering user (OrderPlaced only)."""
        return self.payload.get("user_id")

    @property
    def reason(self) -> str | None:
        """Why the inventory failed an order (InventoryFailed only)."""
        return self.payload.get("reason")

    def to_json(self) -> bytes:
        """The event as UTF-8 wire JSON."""
        return self.wire if self.wire is not None else encode(self.payload)


def encode(payload: dict[str, Any]) -> bytes:
    """An event payload as compact UTF-8 wire JSON (standard JSON only: no NaN, no Infinity)."""
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()


def _refuse_constant(name: str) -> Any:
    raise InvalidEvent(f"body: not standard JSON ({name})")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses as inf: standard text, no standard value
        raise InvalidEvent("body: a number out of range")
    return value


# One decoder for every message: json.loads with hooks builds a new JSONDecoder per call,
# which cost as much as the parse itself on a 300-byte order.
_STRICT_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def loads_strict(raw: bytes | str) -> Any:
    """Parse standard JSON only; any problem (NaN, depth, huge numbers) is an InvalidEvent."""
    try:
        if isinstance(raw, bytes | bytearray):
            # What json.loads does with bytes: UTF-8, or UTF-16/32 told by the first bytes.
            raw = raw.decode(json.detect_encoding(raw), "surrogatepass")
        return _STRICT_DECODER.decode(raw)
    except InvalidEvent:
        raise
    except RecursionError:
        raise InvalidEvent("body: JSON nested too deeply") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidEvent("body: not valid JSON") from None
    except ValueError as exc:  # e.g. an integer beyond Python's digit limit
        raise InvalidEvent(f"body: not usable JSON ({str(exc)[:80]})") from None


def check_id(value: Any, field: str) -> str:
    """A non-empty printable id of at most MAX_ID_LENGTH characters, or InvalidEvent."""
    if value is None:
        raise InvalidEvent(f"{field}: missing")
    if not isinstance(value, str) or not value.strip():
        raise InvalidEvent(f"{field}: must be a non-empty string")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidEvent(f"{field}: at most {MAX_ID_LENGTH} characters (got {len(value)})")
    if not value.isprintable():
        raise InvalidEvent(f"{field}: must not contain control characters")
    return value


def new_event_id() -> str:
    """A fresh globally unique event id (a random UUID, version 4, in its usual text form)."""
    # uuid.uuid4() builds a UUID object through a pure-Python __init__: formatting the 16
    # random bytes directly is several times cheaper, and the same text.
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40  # version 4
    b[8] = (b[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def now_iso() -> str:
    """The current wall-clock time as ISO 8601 UTC (envelopes carry wall-clock time)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def parse_timestamp(value: str) -> datetime:
    """Parse an envelope timestamp; naive values are taken as UTC."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def validate_items(raw: Any, field: str = "items") -> tuple[Item, ...]:
    """Validate a list of order lines; raise InvalidEvent naming the first bad field."""
    if not isinstance(raw, list) or not raw:
        raise InvalidEvent(f"{field}: must be a non-empty list")
    if len(raw) > MAX_ITEMS:
        raise InvalidEvent(f"{field}: at most {MAX_ITEMS} lines")
    items = []
    for i, line in enumerate(raw):
        where = f"{field}[{i}]"
        if not isinstance(line, dict):
            raise InvalidEvent(f"{where}: must be an object")
        item_id = check_id(line.get("item_id"), f"{where}.item_id")
        qty = line.get("quantity")
        if isinstance(qty, bool) or not isinstance(qty, int):
            raise InvalidEvent(f"{where}.quantity: must be an integer")
        if qty <= 0:
            raise InvalidEvent(f"{where}.quantity: must be greater than 0")
        if qty > MAX_QUANTITY:
            raise InvalidEvent(f"{where}.quantity: at most {MAX_QUANTITY}")
        price = line.get("price", 0.0)
        if isinstance(price, bool) or not isinstance(price, int | float) \
                or (isinstance(price, float) and not math.isfinite(price)):
            raise InvalidEvent(f"{where}.price: must be a number")
        if price < 0:
            raise InvalidEvent(f"{where}.price: must be >= 0")
        if price > MAX_PRICE:
            raise InvalidEvent(f"{where}.price: at most {MAX_PRICE:g}")
        items.append(Item(item_id, qty, float(price)))
    return tuple(items)


def _require_str(payload: dict[str, Any], field: str, limit: int = MAX_ID_LENGTH) -> str:
    value = payload.get(field)
    if value is None:
        raise InvalidEvent(f"{field}: missing")
    if not isinstance(value, str) or not value:
        raise InvalidEvent(f"{field}: must be a non-empty string")
    if len(value) > limit:
        raise InvalidEvent(f"{field}: at most {limit} characters (got {len(value)})")
    return value


def parse_event(body: bytes, *, expect: tuple[str, ...] = EVENT_TYPES) -> Event:
    """Decode and validate one message body; raise InvalidEvent with the reason."""
    if len(body) > MAX_EVENT_BYTES:
        raise InvalidEvent(f"body: oversize ({len(body)} bytes > {MAX_EVENT_BYTES})")
    payload = loads_strict(body)
    if not isinstance(payload, dict):
        raise InvalidEvent("body: must be a JSON object")
    event_type = payload.get("event_type")
    if event_type not in EVENT_TYPES:
        shown = event_type[:40] if isinstance(event_type, str) else type(event_type).__name__
        raise InvalidEvent(f"event_type: unknown ({shown!r})")
    if event_type not in expect:
        raise InvalidEvent(f"event_type: {event_type} not expected here")
    event_id = check_id(payload.get("event_id"), "event_id")
    order_id = check_id(payload.get("order_id"), "order_id")
    timestamp = _require_str(payload, "timestamp")
    try:
        parse_timestamp(timestamp)
    except ValueError:
        raise InvalidEvent("timestamp: not ISO 8601") from None
    items = validate_items(payload.get("items"))
    if event_type == ORDER_PLACED:
        check_id(payload.get("user_id"), "user_id")
        total = payload.get("total_amount")
        if isinstance(total, bool) or not isinstance(total, int | float) \
                or not -MAX_TOTAL <= total <= MAX_TOTAL:
            raise InvalidEvent("total_amount: must be a finite number")
    else:
        if event_type == INVENTORY_FAILED:
            _require_str(payload, "reason", MAX_REASON_LENGTH)
        elif payload.get("reason") is not None:
            raise InvalidEvent("reason: must be null for InventoryReserved")
        stamp = payload.get("order_timestamp")
        if stamp is not None and (not isinstance(stamp, str) or len(stamp) > MAX_ID_LENGTH):
            raise InvalidEvent("order_timestamp: must be an ISO 8601 string")
    return Event(event_type, event_id, order_id, timestamp, items, payload)


def order_placed(
    order_id: str, user_id: str, items: tuple[Item, ...], *, event_id: str | None = None
) -> Event:
    """Build an OrderPlaced event for an accepted order (items as `validate_items` made them).

    Built directly, not encoded and parsed back: the ids are checked here, items that
    passed `validate_items` bound the total, and the wire JSON, encoded once here, must fit
    in MAX_EVENT_BYTES, or no consumer would take it (ids of characters outside the Basic
    Multilingual Plane grow to 12 bytes each as JSON escapes).
    """
    if not items:
        raise InvalidEvent("items: must be a non-empty list")
    total = round(sum(i.quantity * i.price for i in items), 2)
    if not math.isfinite(total) or not -MAX_TOTAL <= total <= MAX_TOTAL:
        raise InvalidEvent("total_amount: must be a finite number")
    event_id = check_id(event_id or new_event_id(), "event_id")
    timestamp = now_iso()
    payload = {
        "event_id": event_id,
        "event_type": ORDER_PLACED,
        "timestamp": timestamp,
        "order_id": check_id(order_id, "order_id"),
        "user_id": check_id(user_id, "user_id"),
        "items": [i.to_dict() for i in items],
        "total_amount": total,
    }
    wire = encode(payload)
    if len(wire) > MAX_EVENT_BYTES:
        raise InvalidEvent(f"body: the order's event would be {len(wire)} bytes as JSON, more "
                           f"than {MAX_EVENT_BYTES}: fewer items or shorter ids")
    return Event(ORDER_PLACED, event_id, order_id, timestamp, tuple(items), payload, wire)


def _bounded_reason(reason: str | None) -> str | None:
    if reason is None or len(reason) <= MAX_REASON_LENGTH:
        return reason
    return reason[: MAX_REASON_LENGTH - 20] + f"... [{len(reason)} chars]"


def inventory_outcome(
    order: Event, reserved: bool, reason: str | None = None, *, extra: dict | None = None
) -> Event:
    """Build the InventoryReserved or InventoryFailed event that answers an order."""
    payload: dict[str, Any] = {
        "event_id": new_event_id(),
        "event_type": INVENTORY_RESERVED if reserved else INVENTORY_FAILED,
        "timestamp": now_iso(),
        "order_id": order.order_id,
        "items": [i.to_dict() for i in order.items],
        "reason": _bounded_reason(reason) if not reserved else None,
        # The order's own time lets consumers measure latency per hop.
        "order_timestamp": order.timestamp,
        **(extra or {}),
    }
    if not reserved and not reason:
        raise ValueError("an InventoryFailed event needs a reason")
    return Event(payload["event_type"], payload["event_id"], order.order_id,
                 payload["timestamp"], order.items, payload)
