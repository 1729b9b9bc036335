"""What POST /order refuses before anything is stored or published, without a broker.

The refusals here happen before the store or the bus is touched, so the service's Flask
app is driven in this process with its bus never started.
"""

from __future__ import annotations

import json

import pytest

from lab_services import events
from lab_services.order import OrderService, create_order_app
from lab_services.settings import load

# One character outside the Basic Multilingual Plane: 4 bytes of UTF-8 in the request, 12
# bytes as the JSON escapes \\ud83c\\udf54 in the event.
BURGER = "\U0001F354"


def _order_whose_event_is_oversize() -> dict:
    """A body well under the 64 KiB request limit whose event, as JSON, is over 64 KiB."""
    item_id = BURGER * events.MAX_ID_LENGTH
    return {"user_id": BURGER * events.MAX_ID_LENGTH,
            "items": [{"item_id": item_id, "quantity": 1, "price": 1.0}] * 100}


def test_an_order_whose_event_no_consumer_would_take_is_refused_naming_it(tmp_path):
    service = OrderService(load("order", {"STORE_PATH": str(tmp_path / "order.sqlite")}))
    client = create_order_app(service).test_client()
    body = json.dumps(_order_whose_event_is_oversize(), ensure_ascii=False).encode()
    assert len(body) < service.config.max_body_bytes
    answer = client.post("/order", data=body, content_type="application/json")
    assert answer.status_code == 400
    assert answer.json["field"] == "body" and "bytes as JSON" in answer.json["error"]
    assert service.store.count() == 0 and service.store.outbox_backlog() == 0


def test_order_placed_refuses_an_event_over_the_consumers_limit_and_encodes_once():
    with pytest.raises(events.InvalidEvent, match="more than 65536"):
        events.order_placed("ORD-20261203-00000001", BURGER * 64, events.validate_items(
            _order_whose_event_is_oversize()["items"]))
    event = events.order_placed("ORD-20261203-00000002", "u-1", events.validate_items(
        [{"item_id": "item_1", "quantity": 2, "price": 1.25}]))
    # The wire JSON is the one a consumer parses back into the same event.
    assert event.to_json() is event.to_json()
    assert events.parse_event(event.to_json()) == event
