"""A new order whose drawn id is taken gets another id: never a 500, never another's row.

The order service runs in this process against a real broker, with `new_order_id` made to
draw a taken id first; every answer, row and event is then read back as it is.
"""

from __future__ import annotations

import json

import pytest

from harness import amqp
from harness.bench import topology_vhost
from harness.waiting import wait_until
from lab_services import order as order_module
from lab_services import topology
from lab_services.order import OrderService, create_order_app
from lab_services.settings import load

pytestmark = pytest.mark.broker

ORDER = {"user_id": "u-1", "items": [{"item_id": "item_1", "quantity": 1, "price": 2.5}]}
TAKEN, FREE = "ORD-20261203-0000dup1", "ORD-20261203-0000new2"


@pytest.mark.parametrize("publish", ["outbox", "direct"])
def test_a_taken_order_id_is_drawn_again(broker, tmp_path, monkeypatch, publish):
    with topology_vhost(broker, "order-ids") as url:
        settings = load("order", {"STORE_PATH": str(tmp_path / "order.sqlite"),
                                  "AMQP_URL": url, "ORDER_PUBLISH": publish})
        service = OrderService(settings)
        client = create_order_app(service).test_client()
        draws = iter([TAKEN, TAKEN, FREE])
        monkeypatch.setattr(order_module, "new_order_id", lambda: next(draws))
        service.bus.start()
        service.start()
        try:
            assert service.bus.wait_connected(30)
            first = client.post("/order", json=ORDER)
            second = client.post("/order", json={**ORDER, "user_id": "u-2"})
            placed = wait_until(lambda: (lambda got: got if len(got) >= 2 else None)(
                amqp.read_queue(url, topology.QUEUE_ORDER_PLACED)), 30, "two OrderPlaced")
        finally:
            service.relay.stop()
            service.bus.close()
        assert (first.status_code, second.status_code) == (201, 201)
        assert (first.json["order_id"], second.json["order_id"]) == (TAKEN, FREE)
        # Each order keeps its own row and its own event: the second did not overwrite or
        # vanish behind the first.
        rows = {o["order_id"]: o["user_id"] for o in service.store.all()}
        assert rows == {TAKEN: "u-1", FREE: "u-2"}
        events = sorted((json.loads(m["body"])["order_id"], json.loads(m["body"])["user_id"])
                        for m in placed)
        assert events == [(TAKEN, "u-1"), (FREE, "u-2")]
