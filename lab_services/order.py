"""Order service: accepts orders over HTTP and announces them as OrderPlaced events.

An order is answered 201 only once the broker has confirmed its OrderPlaced event, and 503
when the broker cannot take it: no order is accepted and then lost. The order's status
follows the inventory's outcome, learned from the service's own queue `order_status`.
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime

import pika
from flask import jsonify, request

from lab_services import events, topology
from lab_services.bus import PERSISTENT, BrokerUnavailable, Bus, BusConfig, Delivery, Outgoing
from lab_services.config import ServiceConfig
from lab_services.store import OrderStore
from lab_services.web import create_app, error, run_service

log = logging.getLogger(__name__)

CONFIRM_TIMEOUT_S = 5.0


def new_order_id() -> str:
    """An order id in the original lab's shape: ORD-YYYYMMDD-xxxxxxxx."""
    return f"ORD-{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(4)}"


def order_placed_message(event: events.Event) -> Outgoing:
    """The AMQP message that carries an OrderPlaced event."""
    props = pika.BasicProperties(content_type="application/json", delivery_mode=PERSISTENT,
                                 message_id=event.event_id, correlation_id=event.order_id,
                                 type=event.event_type, app_id="order-service")
    return Outgoing(topology.ORDER_EVENTS, topology.KEY_ORDER_PLACED, event.to_json(), props)


def parse_order_request(body: object) -> tuple[str, tuple[events.Item, ...]]:
    """Validate a POST /order body; raise InvalidEvent naming the bad field."""
    if not isinstance(body, dict):
        raise events.InvalidEvent("body: must be a JSON object")
    user_id = body.get("user_id")
    if user_id is None:
        raise events.InvalidEvent("user_id: missing")
    if not isinstance(user_id, str) or not user_id.strip():
        raise events.InvalidEvent("user_id: must be a non-empty string")
    if "items" not in body:
        raise events.InvalidEvent("items: missing")
    return user_id, events.validate_items(body["items"])


class OrderService:
    """Accepts orders, publishes them confirmed, and tracks their inventory outcome."""

    def __init__(self, config: ServiceConfig | None = None, bus_config: BusConfig | None = None):
        self.config = config or ServiceConfig("order", 5001)
        self.store = OrderStore(self.config.store_path)
        self.bus = Bus(bus_config, name="order")
        self.bus.consume(topology.ORDER_STATUS, self.on_status, unit_of_work=self.store.transaction)
        self.refused = 0

    def place(self, user_id: str, items: tuple[events.Item, ...]) -> dict:
        """Publish an order and wait for the broker's confirm; return the accepted order."""
        order_id = new_order_id()
        event = events.order_placed(order_id, user_id, items)
        self.bus.publish_confirmed(order_placed_message(event), timeout=CONFIRM_TIMEOUT_S)
        order = {
            "order_id": order_id,
            "user_id": user_id,
            "items": [i.to_dict() for i in items],
            "total_amount": event.payload["total_amount"],
            "status": "PENDING",
            "created_at": event.timestamp,
            "event_id": event.event_id,
        }
        self.store.add(order)
        return order

    def on_status(self, delivery: Delivery) -> list[Outgoing]:
        """Follow the inventory's verdict on one of our orders."""
        event = events.parse_event(
            delivery.body, expect=(events.INVENTORY_RESERVED, events.INVENTORY_FAILED))
        status = "RESERVED" if event.event_type == events.INVENTORY_RESERVED else "FAILED"
        self.store.set_status(event.order_id, status, event.reason, event.timestamp)
        return []


def create_order_app(service: OrderService):
    """The order service's HTTP API."""
    app = create_app("order-service", service.bus,
                     lambda: {"orders": service.store.count(), "refused": service.refused})

    @app.post("/order")
    def place_order():
        if not request.is_json:
            return error(415, "body: Content-Type must be application/json", field="body")
        body = request.get_json(silent=True)
        if body is None:
            return error(400, "body: not valid JSON", field="body")
        try:
            user_id, items = parse_order_request(body)
        except events.InvalidEvent as exc:
            return error(400, exc.reason, field=exc.reason.split(":")[0])
        try:
            order = service.place(user_id, items)
        except BrokerUnavailable as exc:
            service.refused += 1
            return error(503, f"order not accepted: the message broker is unavailable ({exc})",
                         retry=True)
        return jsonify(order), 201

    @app.get("/order/<order_id>")
    def get_order(order_id: str):
        order = service.store.get(order_id)
        if order is None:
            return error(404, f"order {order_id} not found", order_id=order_id)
        return jsonify(order)

    @app.get("/orders")
    def list_orders():
        return jsonify(service.store.all())

    return app


def main() -> None:
    """Run the order service (python -m lab_services.order)."""
    run_service(OrderService, create_order_app)


if __name__ == "__main__":
    main()
