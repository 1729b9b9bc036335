"""Inventory service: reserves stock for each OrderPlaced, all or nothing, exactly once.

In `sqlite` mode (the default) the reservation, the processed-order record and the outcome
commit in one transaction, and a redelivered order re-publishes its stored outcome: a crash
between commit and publish then costs a duplicate event (which the notification service
ignores) instead of a lost notification. `memory` is the original lab's in-process set,
forgotten on restart; `skip` keeps a durable processed record but drops a redelivery
(losing the notification if the first attempt crashed before publishing); `off` does no
duplicate check at all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pika
from flask import jsonify

from lab_services import crashpoints, events, topology
from lab_services.bus import PERSISTENT, Bus, Delivery, Outgoing
from lab_services.crashpoints import crash_if
from lab_services.retry import RetryPolicy
from lab_services.settings import Settings, load
from lab_services.store import InventoryStore, Outcome, catalogue, open_inventory_store
from lab_services.store_health import CommitWatch, sqlite_probe
from lab_services.web import create_app, run_service

log = logging.getLogger(__name__)


def outcome_message(outcome: Outcome) -> Outgoing:
    """The AMQP message that carries an inventory outcome event (its body as stored)."""
    # It is meant for two queues (the notification queue and order_status), and `mandatory`
    # says nothing while only one of them is missing (deleted, say): the bus checks that
    # each exists just before the publish, so a missing one stops the outcome before it is
    # routed, and the order comes back to be answered again once the queue is declared again.
    if outcome.reserved:
        key, event_type = topology.KEY_INVENTORY_RESERVED, events.INVENTORY_RESERVED
    else:
        key, event_type = topology.KEY_INVENTORY_FAILED, events.INVENTORY_FAILED
    props = pika.BasicProperties(content_type="application/json", delivery_mode=PERSISTENT,
                                 message_id=outcome.event_id, correlation_id=outcome.order_id,
                                 type=event_type, app_id="inventory-service")
    return Outgoing(topology.INVENTORY_EVENTS, key, outcome.body, props,
                    topology.destinations(topology.INVENTORY_EVENTS, key))


class InventoryService:
    """Consumes order_placed, reserves stock, publishes the outcome."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or load("inventory")
        self.config = self.settings.inventory
        crashpoints.configure(self.config.crash_at)
        service = self.settings.service
        self.store: InventoryStore = open_inventory_store(
            service.store_path, url=service.store_url, synchronous=service.sqlite_synchronous)
        self.store.seed(catalogue(self.config.initial_stock))
        self.seen_in_memory: set[str] = set()
        self.duplicates_skipped = 0
        # The redelivery counts live in the inventory's own store (shared, with PostgreSQL,
        # by every inventory that takes from the queue).
        self.bus = Bus(self.settings.bus, name="inventory", counter=self.store)
        self._in_this_batch: list[str] = []
        # Whether the SQLite store commits, for /health (a full disk: not ok until it does).
        self.commits = CommitWatch(None if self.settings.service.store_url
                                   else sqlite_probe(self.store))
        self.bus.consume(topology.QUEUE_ORDER_PLACED, self.handle, before_ack=self._before_ack,
                         retry=RetryPolicy(queue=topology.QUEUE_ORDER_PLACED),
                         unit_of_work=self.unit_of_work, prepare=self.prepare)

    def start(self) -> None:
        """Nothing to start besides the bus."""

    @contextmanager
    def unit_of_work(self) -> Iterator[None]:
        """One store transaction around a burst of orders; outcomes publish after it."""
        self._in_this_batch = []
        with self.commits.watching(self.store.transaction)():
            yield
        for order_id in self._in_this_batch:
            crash_if("after_commit", order_id)

    def prepare(self, delivery: Delivery) -> None:
        """Parse the order and do the kitchen's work, before the store's lock is taken."""
        order = events.parse_event(delivery.body, expect=(events.ORDER_PLACED,))
        delivery.context["order"] = order
        delivery.context["order_id"] = order.order_id
        if self.config.work_ms:
            time.sleep(self.config.work_ms / 1000)

    def handle(self, delivery: Delivery) -> list[Outgoing]:
        """Process one OrderPlaced delivery; return the outcome to publish before the ack."""
        order = delivery.context.get("order")
        if order is None:  # called without prepare (tests, other callers)
            order = events.parse_event(delivery.body, expect=(events.ORDER_PLACED,))
            delivery.context["order_id"] = order.order_id
        if self.config.fail_user and order.user_id == self.config.fail_user:
            raise RuntimeError(f"simulated persistent failure for user {order.user_id}")
        mode = self.config.idempotency
        if mode == "memory" and order.order_id in self.seen_in_memory:
            # The original lab: a duplicate is acked and dropped without a word.
            self.duplicates_skipped += 1
            return []
        with self.store.transaction() as db:
            stored = self.store.outcome(order.order_id, db) if mode in ("sqlite", "skip") else None
            if stored is not None and mode == "skip":
                # The naive durable design: seen before, so ack and drop it.
                self.duplicates_skipped += 1
                return []
            if stored is None:
                lines = [(i.item_id, i.quantity) for i in order.items]
                why_not = self.store.try_reserve(db, order.order_id, order.event_id, lines)
                event = events.inventory_outcome(order, why_not is None, why_not)
                # Encoded once: these bytes are stored and published.
                stored = Outcome(order.order_id, why_not is None, why_not, event.event_id,
                                 event.to_json())
                self.store.record_outcome(db, stored)
                fresh = True
            else:
                fresh = False
                self.duplicates_skipped += 1
            crash_if("before_commit", order.order_id)
        # The burst's transaction commits later, in unit_of_work: note the order for the
        # after_commit crash point there.
        self._in_this_batch.append(order.order_id)
        if mode == "memory":
            self.seen_in_memory.add(order.order_id)
        if fresh:
            log.debug("order %s: %s", order.order_id, stored.reason or "reserved")
        else:
            log.info("order %s seen before: re-publishing its stored outcome", order.order_id)
        return [outcome_message(stored)]

    def _before_ack(self, delivery: Delivery) -> None:
        order_id = delivery.context.get("order_id")
        if order_id:
            crash_if("after_publish", order_id)

    def health(self) -> dict:
        """Inventory-specific health fields."""
        return {"processed_orders": self.store.processed_count(),
                "idempotency": self.config.idempotency,
                "duplicates_skipped": self.duplicates_skipped,
                "bus": self.bus.stats()}


def create_inventory_app(service: InventoryService):
    """The inventory's HTTP API."""
    app = create_app("inventory-service", service.bus, service.health,
                     store=service.commits,
                     max_body_bytes=service.settings.service.max_body_bytes)

    @app.get("/inventory")
    def inventory():
        return jsonify(service.store.inventory())

    @app.get("/reservations")
    def reservations():
        return jsonify({"reservations": service.store.reservations(),
                        "outcomes": service.store.outcomes()})

    return app


def main() -> None:
    """Run the inventory service (python -m lab_services.inventory)."""
    run_service("inventory", InventoryService, create_inventory_app)


if __name__ == "__main__":
    main()
