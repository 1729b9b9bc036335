"""What a POST /order asks for: the body parsed, the Idempotency-Key checked, a digest.

Pure functions of the request, no I/O: the order service's routes call them before
anything is stored or published, so every refusal is a 400 naming the field.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import UTC, datetime

from lab_services import events

MAX_IDEMPOTENCY_KEY = 128


def new_order_id() -> str:
    """An order id in the original lab's shape: ORD-YYYYMMDD-xxxxxxxx."""
    return f"ORD-{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(4)}"


def parse_order_request(body: object) -> tuple[str, tuple[events.Item, ...]]:
    """Validate a POST /order body; raise InvalidEvent naming the bad field."""
    if not isinstance(body, dict):
        raise events.InvalidEvent("body: must be a JSON object")
    user_id = events.check_id(body.get("user_id"), "user_id")
    if "items" not in body:
        raise events.InvalidEvent("items: missing")
    return user_id, events.validate_items(body["items"])


def check_idempotency_key(raw: str | None) -> str | None:
    """The Idempotency-Key header if valid (1-128 printable ASCII), None if absent."""
    if raw is None:
        return None
    if not 1 <= len(raw) <= MAX_IDEMPOTENCY_KEY or not raw.isascii() or not raw.isprintable():
        raise events.InvalidEvent(
            f"Idempotency-Key: 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters")
    return raw


def request_hash(user_id: str, items: tuple[events.Item, ...]) -> str:
    """A digest of what an order asks for, to tell a retry from a different request."""
    canonical = json.dumps([user_id, [i.to_dict() for i in items]], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
