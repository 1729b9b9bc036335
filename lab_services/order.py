"""Order service: accepts orders over HTTP and announces them as OrderPlaced events.

Two designs, chosen with ORDER_PUBLISH, so the lab can show the difference:

- `outbox` (default): the order and its event commit in one SQLite transaction; a relay
  publishes unsent events with confirms and marks them sent. `POST /order` answers 201 once
  the event is confirmed, or 202 if the broker cannot confirm in time: the order is safe on
  disk and will be published. Nothing accepted is lost, and nothing unaccepted is made.
- `direct`: publish, wait for the confirm, then store. The cautionary example: a confirm
  that comes late, or a crash between confirm and store, gives a 503 (or a 404 on GET) for
  an order the kitchen nevertheless makes.

Both honour an `Idempotency-Key` header: the same key and body give the same order and
never a second event; the same key with another body gets 422.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from flask import jsonify, request

from lab_services import events, topology
from lab_services.bus import BrokerUnavailable, Bus, Delivery, Outgoing
from lab_services.headers import SHORT_STR_MAX
from lab_services.order_group import GroupCommit
from lab_services.order_requests import (
    check_idempotency_key,
    new_order_id,
    parse_order_request,
    request_hash,
)
from lab_services.outbox import OutboxRelay, order_placed_message
from lab_services.retry import RetryPolicy
from lab_services.settings import Settings, load
from lab_services.store import DeliveryCounts, IdempotencyConflict, OrderStore
from lab_services.store_health import CommitWatch, sqlite_probe
from lab_services.web import create_app, error, read_json, run_service

log = logging.getLogger(__name__)

# How many order ids a request may draw before it gives up (each taken one is drawn again).
ORDER_ID_DRAWS = 5
# SQLite's message for a second order with the same id (the orders table's primary key).
ORDER_ID_CONSTRAINT = "orders.order_id"


class KeyInProgress(RuntimeError):
    """Another request with the same Idempotency-Key is still being answered."""


class OrderIdTaken(RuntimeError):
    """The order id drawn for a new order belongs to another order already."""


class Placed:
    """What POST /order answers: the order, whether its event is confirmed, a replay or not.

    `body` is the order as the JSON it was stored as, when there is one: answered as it is
    instead of encoded a second time.
    """

    def __init__(self, order: dict[str, Any], confirmed: bool, replayed: bool = False,
                 body: str | None = None) -> None:
        self.order = order
        self.confirmed = confirmed
        self.replayed = replayed
        self.body = body


@dataclass(frozen=True)
class _Accept:
    """One order to store with its event (and its Idempotency-Key with the request digest)."""

    order: dict[str, Any]
    order_json: str
    event: str
    key: tuple[str, str] | None


class OrderService:
    """Accepts orders, stores and publishes them, and tracks their inventory outcome."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or load("order")
        self.config = self.settings.service
        sync = self.config.sqlite_synchronous
        self.store = OrderStore(self.config.store_path, synchronous=sync)
        # Whether the store commits: a full disk answers 503 and makes /health say so.
        self.commits = CommitWatch(sqlite_probe(self.store))
        self.bus = Bus(self.settings.bus, name="order",
                       counter=DeliveryCounts(self.config.store_path, synchronous=sync))
        self.bus.consume(topology.QUEUE_ORDER_STATUS, self.on_status,
                         retry=RetryPolicy(queue=topology.QUEUE_ORDER_STATUS),
                         unit_of_work=self.commits.watching(self.store.transaction))
        self.mode = self.settings.order.publish
        self.relay = OutboxRelay(self.store, self.bus, interval=self.settings.order.relay_interval,
                                 timeout=self.settings.order.confirm_timeout)
        # Concurrent POSTs share one transaction (one fsync) and publish together.
        self.intake: GroupCommit[_Accept, tuple[int, Future | None]] = GroupCommit(
            self._accept_group)
        self.refused = 0
        self.accepted_unconfirmed = 0
        # Keys being answered right now: a concurrent retry must not publish a second time.
        self._keys_in_progress: set[str] = set()
        self._keys_lock = threading.Lock()

    def start(self) -> None:
        """Start the outbox relay (the bus is started by run_service)."""
        if self.mode == "outbox":
            self.relay.start()

    def place(self, user_id: str, items: tuple[events.Item, ...],
              key: str | None = None) -> Placed:
        """Accept an order in the configured design; raise BrokerUnavailable to refuse it."""
        if key is None:
            return self._place_new(user_id, items, None, "")
        digest = request_hash(user_id, items)
        with self._keys_lock:
            if key in self._keys_in_progress:
                raise KeyInProgress(key)
            self._keys_in_progress.add(key)
        try:
            known = self.store.recall_key(key, digest)
            if known is not None:
                return self._replay(*known)
            return self._place_new(user_id, items, key, digest)
        finally:
            with self._keys_lock:
                self._keys_in_progress.discard(key)

    def _place_new(self, user_id: str, items: tuple[events.Item, ...], key: str | None,
                   digest: str) -> Placed:
        # An order id has 32 random bits under the day's date (the original lab's shape):
        # among 30,000 orders in a day, two share an id about once in ten days. A taken id is
        # drawn again, never answered with a 500 nor stored over another order.
        for _ in range(ORDER_ID_DRAWS - 1):
            try:
                return self._place_as(new_order_id(), user_id, items, key, digest)
            except OrderIdTaken as exc:
                log.warning("order id %s is taken; drawing another", exc)
        return self._place_as(new_order_id(), user_id, items, key, digest)

    def _place_as(self, order_id: str, user_id: str, items: tuple[events.Item, ...],
                  key: str | None, digest: str) -> Placed:
        if self.mode == "direct" and self.store.get(order_id) is not None:
            raise OrderIdTaken(order_id)
        event = events.order_placed(order_id, user_id, items)
        event_json = event.to_json().decode()
        order = self._order_view(event, user_id, items)
        try:
            if self.mode == "outbox":
                return self._place_outbox(order, event_json, key, digest)
            if key is not None:
                self.store.remember_key(key, digest, order_id, event_json)
        except sqlite3.IntegrityError:
            # The same key arrived twice at once: the other request won; answer as it did.
            known = self.store.recall_key(key or "", digest)
            if known is None:
                raise
            return self._replay(*known)
        return self._place_direct(order, event_json)

    def _order_view(self, event: events.Event, user_id: str,
                    items: tuple[events.Item, ...]) -> dict[str, Any]:
        return {
            "order_id": event.order_id,
            "user_id": user_id,
            "items": event.payload["items"],
            "total_amount": event.payload["total_amount"],
            "status": "PENDING",
            "created_at": event.timestamp,
            "event_id": event.event_id,
        }

    def _place_outbox(self, order: dict[str, Any], event_json: str, key: str | None,
                      digest: str) -> Placed:
        order_id = order["order_id"]
        # Encoded once: stored as it is, and answered as it is.
        order_json = json.dumps(order, separators=(",", ":"), allow_nan=False)
        if not self.relay.claim(order_id):  # before the row is visible to the relay
            raise OrderIdTaken(order_id)  # another request is placing this very id
        try:
            seq, confirm = self.intake.submit(
                _Accept(order, order_json, event_json,
                        (key, digest) if key is not None else None))
        except sqlite3.IntegrityError as exc:
            self.relay.release(order_id)
            if ORDER_ID_CONSTRAINT in str(exc):
                raise OrderIdTaken(order_id) from None
            raise
        except BaseException:
            self.relay.release(order_id)
            raise
        if confirm is None:  # the broker is away or blocking: the relay publishes it later
            self.relay.release(order_id)
            self.relay.wake()
            self.accepted_unconfirmed += 1
            return Placed(order, confirmed=False, body=order_json)
        confirmed = self.relay.await_confirm(seq, order_id, confirm)
        if not confirmed:
            self.accepted_unconfirmed += 1
        return Placed(order, confirmed=confirmed, body=order_json)

    def _accept_group(self, group: list[_Accept]) -> list[tuple[int, Future | None]
                                                          | BaseException]:
        """Store a group of orders in one transaction, then hand their events to the broker.

        Each order is a savepoint of its own, so an Idempotency-Key taken meanwhile fails
        that order alone. Events confirmed earlier are marked sent in the same commit. A
        201 still waits for its own event's confirm: the group shares the fsync and the
        broker's confirms, never the promise.
        """
        marks = self.relay.take_confirmed()
        stored: list[int | BaseException] = []
        try:
            with self.commits.watching(self.store.transaction)():
                self.store.mark_sent([seq for seq, _ in marks])
                for accept in group:
                    try:
                        stored.append(self.store.accept(accept.order["order_id"],
                                                        accept.order_json, accept.event,
                                                        accept.key))
                    except sqlite3.IntegrityError as exc:
                        stored.append(exc)
        except BaseException:
            self.relay.give_back(marks)
            raise
        self.relay.marked(marks)
        live = self.bus.connected and not self.bus.blocked.is_set()
        return [seq if isinstance(seq, BaseException) else
                (seq, self.relay.publish_claimed(a.order["order_id"], a.order["event_id"],
                                                 a.event) if live else None)
                for a, seq in zip(group, stored, strict=True)]

    def _place_direct(self, order: dict[str, Any], event_json: str) -> Placed:
        if self.bus.blocked.is_set():
            raise BrokerUnavailable("the broker is blocking publishers (resource alarm)")
        self.bus.publish_confirmed(order_placed_message(event_json, order["order_id"],
                                                        order["event_id"]),
                                   timeout=self.settings.order.confirm_timeout)
        self.store.add(order)
        return Placed(order, confirmed=True)

    def _replay(self, order_id: str, event_json: str) -> Placed:
        """Answer a retried request: the same order, and at most a copy of the same event."""
        order = self.store.get(order_id)
        if order is not None:
            return Placed(order, confirmed=self.relay.is_sent(order_id), replayed=True)
        # Only the direct design gets here: an earlier attempt was refused (503) before the
        # order was stored. Publish the *same* event again (same order and event ids), so
        # the inventory sees at most a duplicate it recognises.
        event = events.parse_event(event_json.encode(), expect=(events.ORDER_PLACED,))
        placed = self._place_direct(
            self._order_view(event, event.user_id or "", event.items), event_json)
        placed.replayed = True
        return placed

    def on_status(self, delivery: Delivery) -> list[Outgoing]:
        """Follow the inventory's verdict on one of our orders."""
        event = events.parse_event(
            delivery.body, expect=(events.INVENTORY_RESERVED, events.INVENTORY_FAILED))
        status = "RESERVED" if event.event_type == events.INVENTORY_RESERVED else "FAILED"
        self.store.set_status(event.order_id, status, event.reason, event.timestamp)
        return []

    def health(self) -> dict[str, Any]:
        """Order-specific health fields."""
        return {"orders": self.store.count(), "refused": self.refused,
                "publish": self.mode, "outbox_unsent": self.store.outbox_backlog(),
                "accepted_unconfirmed": self.accepted_unconfirmed,
                "group_commits": self.intake.groups, "grouped_orders": self.intake.items,
                "broker_blocked": self.bus.blocked.is_set()}


def create_order_app(service: OrderService):
    """The order service's HTTP API."""
    app = create_app("order-service", service.bus, service.health,
                     max_body_bytes=service.config.max_body_bytes, store=service.commits)

    @app.post("/order")
    def place_order():
        body = read_json(request)
        try:
            key = check_idempotency_key(request.headers.get("Idempotency-Key"))
            user_id, items = parse_order_request(body)
        except events.InvalidEvent as exc:
            return error(400, exc.reason, field=exc.reason.split(":")[0])
        try:
            placed = service.place(user_id, items, key)
        except events.InvalidEvent as exc:  # valid fields, but an event no consumer takes
            return error(400, exc.reason, field=exc.reason.split(":")[0])
        except sqlite3.IntegrityError:
            # A concurrent request took this order's id or key between the check and the
            # insert: in the direct design after its event went out (its known window).
            return error(503, "order not stored: a concurrent request took its id or "
                              "Idempotency-Key; try again", retry=True)
        except IdempotencyConflict:
            return error(422, "Idempotency-Key: reused with a different body",
                         field="Idempotency-Key")
        except OrderIdTaken:
            return error(503, f"order not accepted: {ORDER_ID_DRAWS} order ids drawn were all "
                              "taken", retry=True)
        except KeyInProgress:
            return error(409, "Idempotency-Key: a request with this key is still in progress",
                         field="Idempotency-Key", retry=True)
        except BrokerUnavailable as exc:
            service.refused += 1
            return error(503, f"order not accepted: the message broker is unavailable ({exc})",
                         retry=True)
        response = (app.response_class(placed.body, mimetype="application/json")
                    if placed.body is not None else jsonify(placed.order))
        response.status_code = 201 if placed.confirmed else 202
        if placed.replayed:
            response.headers["Idempotent-Replayed"] = "true"
        return response

    @app.get("/order/<order_id>")
    def get_order(order_id: str):
        order = service.store.get(order_id) if len(order_id) <= SHORT_STR_MAX else None
        if order is None:
            shown = order_id[:80]
            return error(404, f"order {shown} not found", order_id=shown)
        return jsonify(order)

    @app.get("/orders")
    def list_orders():
        return jsonify(service.store.all())

    return app


def main() -> None:
    """Run the order service (python -m lab_services.order)."""
    run_service("order", OrderService, create_order_app)


if __name__ == "__main__":
    main()
