"""Notification service: one notification per order, whatever the inventory decided."""

from __future__ import annotations

import logging

from flask import jsonify

from lab_services import events, topology
from lab_services.bus import Bus, Delivery, Outgoing
from lab_services.retry import RetryPolicy
from lab_services.settings import Settings, load
from lab_services.store import DeliveryCounts, NotificationStore
from lab_services.web import create_app, run_service

log = logging.getLogger(__name__)


class NotificationService:
    """Consumes inventory_reserved and inventory_failed; records one notification per order."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or load("notification")
        self.config = self.settings.service
        sync = self.config.sqlite_synchronous
        self.store = NotificationStore(self.config.store_path, synchronous=sync)
        self.bus = Bus(self.settings.bus, name="notification",
                       counter=DeliveryCounts(self.config.store_path, synchronous=sync))
        for queue in (topology.QUEUE_INVENTORY_RESERVED, topology.QUEUE_INVENTORY_FAILED):
            self.bus.consume(queue, self.handle, retry=RetryPolicy(queue=queue),
                             unit_of_work=self.store.transaction)

    def start(self) -> None:
        """Nothing to start besides the bus."""

    def handle(self, delivery: Delivery) -> list[Outgoing]:
        """Record the notification for one inventory outcome (duplicates are ignored)."""
        event = events.parse_event(
            delivery.body, expect=(events.INVENTORY_RESERVED, events.INVENTORY_FAILED))
        reserved = event.event_type == events.INVENTORY_RESERVED
        message = (
            f"Order {event.order_id} confirmed: your food is being prepared." if reserved
            else f"Order {event.order_id} could not be fulfilled: {event.reason}")
        notification = {
            "order_id": event.order_id,
            "event_type": event.event_type,
            "status": "RESERVED" if reserved else "FAILED",
            "reason": event.reason,
            "message": message,
            "event_id": event.event_id,
            "order_timestamp": event.payload.get("order_timestamp"),
            "outcome_timestamp": event.timestamp,
            "notified_at": events.now_iso(),
        }
        if not self.store.add(notification):
            log.info("duplicate outcome for %s ignored", event.order_id)
        return []

    def health(self) -> dict:
        """Notification-specific health fields."""
        return {"notifications": self.store.count(),
                "duplicates_ignored": self.store.duplicates_ignored()}


def create_notification_app(service: NotificationService):
    """The notification service's HTTP API."""
    app = create_app("notification-service", service.bus, service.health,
                     max_body_bytes=service.config.max_body_bytes)

    @app.get("/notifications")
    def notifications():
        return jsonify(service.store.all())

    return app


def main() -> None:
    """Run the notification service (python -m lab_services.notification)."""
    run_service("notification", NotificationService, create_notification_app)


if __name__ == "__main__":
    main()
