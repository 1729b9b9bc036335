"""Pure logic: the wire format and its validation (no broker needed)."""

from __future__ import annotations

import json

import pytest

from lab_services import events
from lab_services.order_requests import new_order_id, parse_order_request

GOOD = {"event_id": "e1", "event_type": "OrderPlaced", "timestamp": "2024-02-18T10:00:00Z",
        "order_id": "ORD-1", "user_id": "u1",
        "items": [{"item_id": "item_1", "quantity": 2, "price": 10.0}], "total_amount": 20.0}


def body(**changes) -> bytes:
    payload = {**GOOD, **changes}
    return json.dumps({k: v for k, v in payload.items() if v is not ...}).encode()


def test_valid_order_placed_parses():
    event = events.parse_event(body())
    assert event.event_type == "OrderPlaced" and event.order_id == "ORD-1"
    assert event.items == (events.Item("item_1", 2, 10.0),)


@pytest.mark.parametrize(("raw", "reason"), [
    (b"not valid json at all", "body: not valid JSON"),
    (b'{"event_type":"OrderPlaced","user_id":"x"}', "event_id: missing"),
    (b"[1, 2]", "body: must be a JSON object"),
    (body(event_type="OrderTeleported"), "event_type: unknown"),
    (body(order_id=...), "order_id: missing"),
    (body(order_id=7), "order_id: must be a non-empty string"),
    (body(timestamp="yesterday"), "timestamp: not ISO 8601"),
    (body(items=[]), "items: must be a non-empty list"),
    (body(items=[{"item_id": "item_1", "quantity": "two", "price": 1}]),
     "items[0].quantity: must be an integer"),
    (body(items=[{"item_id": "item_1", "quantity": 0, "price": 1}]),
     "items[0].quantity: must be greater than 0"),
    (body(items=[{"item_id": "item_1", "quantity": True, "price": 1}]),
     "items[0].quantity: must be an integer"),
    (body(items=[{"item_id": "item_1", "quantity": 1, "price": -1}]),
     "items[0].price: must be >= 0"),
    (body(items=[{"quantity": 1, "price": 1}]), "items[0].item_id: missing"),
    (body(total_amount="lots"), "total_amount: must be a finite number"),
    (body(user_id=...), "user_id: missing"),
    (b"{" + b" " * events.MAX_EVENT_BYTES + b"}", "body: oversize"),
])
def test_malformed_messages_name_their_problem(raw, reason):
    with pytest.raises(events.InvalidEvent) as err:
        events.parse_event(raw)
    assert err.value.reason.startswith(reason)


def test_expected_types_are_enforced():
    with pytest.raises(events.InvalidEvent, match="not expected here"):
        events.parse_event(body(), expect=(events.INVENTORY_RESERVED,))


def test_outcome_event_round_trips_and_failed_needs_reason():
    order = events.parse_event(body())
    ok = events.inventory_outcome(order, True)
    parsed = events.parse_event(ok.to_json())
    assert parsed.event_type == "InventoryReserved" and parsed.order_id == "ORD-1"
    assert parsed.payload["order_timestamp"] == order.timestamp
    failed = events.parse_event(events.inventory_outcome(order, False, "no burgers").to_json())
    assert failed.reason == "no burgers"
    with pytest.raises(ValueError):
        events.inventory_outcome(order, False)


def test_order_request_validation_names_fields():
    assert parse_order_request({"user_id": "u", "items": GOOD["items"]})[0] == "u"
    for bad, field in [({"items": GOOD["items"]}, "user_id"), ({"user_id": "u"}, "items"),
                       ({"user_id": "", "items": GOOD["items"]}, "user_id"), ([], "body")]:
        with pytest.raises(events.InvalidEvent) as err:
            parse_order_request(bad)
        assert err.value.reason.startswith(field)


def test_order_ids_have_the_original_shape():
    import re
    assert re.fullmatch(r"ORD-\d{8}-[0-9a-f]{8}", new_order_id())
