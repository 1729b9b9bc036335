"""The transactional outbox's relay: publishes unsent OrderPlaced events with confirms.

The order service stores an order and its event in one transaction (`OrderStore.accept`);
this relay publishes what the outbox holds and marks it sent once the broker confirms it.
`POST /order` publishes its own event at once (`publish_claimed`, `await_confirm`); the
relay's thread picks up whatever that did not get confirmed (a broker away, a confirm too
late). Events confirmed on the HTTP path are marked sent with the next group of orders
stored (one transaction for both), or by the relay's next pass if no order comes.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

import pika

from lab_services import events, topology
from lab_services.bus import PERSISTENT, BrokerUnavailable, Bus, Outgoing
from lab_services.store import OrderStore

log = logging.getLogger(__name__)


def order_placed_message(event_json: str | bytes, order_id: str, event_id: str) -> Outgoing:
    """The AMQP message that carries an OrderPlaced event."""
    body = event_json.encode() if isinstance(event_json, str) else event_json
    props = pika.BasicProperties(content_type="application/json", delivery_mode=PERSISTENT,
                                 message_id=event_id, correlation_id=order_id,
                                 type=events.ORDER_PLACED, app_id="order-service")
    return Outgoing(topology.ORDER_EVENTS, topology.KEY_ORDER_PLACED, body, props)


class OutboxRelay:
    """Publishes the outbox's unsent events with confirms, and marks them sent."""

    def __init__(self, store: OrderStore, bus: Bus, *, interval: float, timeout: float) -> None:
        self.store = store
        self.bus = bus
        self.interval = interval
        self.timeout = timeout
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._in_flight: set[str] = set()
        # Confirmed by the broker, not yet marked sent: marked in batches by the relay's
        # thread (one transaction for many orders instead of one each on the HTTP path).
        # Their claims stay held until then, so the relay never publishes them again.
        self._confirmed: list[tuple[int, str]] = []
        self._confirmed_ids: set[str] = set()
        self.published = 0
        self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)

    def start(self) -> None:
        """Start relaying in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop relaying (unsent events stay in the outbox for the next start)."""
        self._stop.set()
        self._wake.set()

    def wake(self) -> None:
        """Make the relay look at the outbox now instead of at its next interval."""
        self._wake.set()

    def claim(self, order_id: str) -> bool:
        """Take an order's event for publishing; False if someone else is publishing it."""
        with self._lock:
            if order_id in self._in_flight:
                return False
            self._in_flight.add(order_id)
            return True

    def release(self, order_id: str) -> None:
        """Give an order's event back (after marking it sent, or failing to)."""
        with self._lock:
            self._in_flight.discard(order_id)

    def publish_claimed(self, order_id: str, event_id: str, event: str) -> Future:
        """Publish a claimed event at once; the future resolves on the broker's confirm."""
        return self.bus.publish(order_placed_message(event, order_id, event_id))

    def await_confirm(self, seq: int, order_id: str, confirm: Future) -> bool:
        """Wait for a claimed event's confirm; True if the broker confirmed it.

        Confirmed, its claim stays held until it is marked sent (with the next group of
        orders stored, or by the relay's next pass), so the relay never publishes it again.
        Not confirmed in time, its claim is released and the relay retries it.
        """
        try:
            self._wait(confirm)
        except BrokerUnavailable as exc:
            log.info("outbox: %s not confirmed yet (%s); the relay will retry", order_id, exc)
            self.release(order_id)
            self.wake()
            return False
        except BaseException:
            self.release(order_id)
            raise
        with self._lock:
            self._confirmed.append((seq, order_id))
            self._confirmed_ids.add(order_id)
        return True

    def _wait(self, confirm: Future) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                confirm.result(min(0.05, max(deadline - time.monotonic(), 0)))
                return
            except FutureTimeout:
                pass
            # A resource alarm holds the confirm back for as long as it lasts: say so now.
            if self.bus.blocked.is_set():
                raise BrokerUnavailable("the broker is blocking publishers (resource alarm)")
            if time.monotonic() >= deadline:
                raise BrokerUnavailable(f"no publisher confirm within {self.timeout:.1f}s")

    def is_sent(self, order_id: str) -> bool:
        """True once the broker confirmed the order's event (marked in the store or not)."""
        with self._lock:
            if order_id in self._confirmed_ids:
                return True
        return self.store.is_sent(order_id)

    def take_confirmed(self) -> list[tuple[int, str]]:
        """The (seq, order id) of events confirmed and not yet marked sent; mark them, then
        call `marked` (or `give_back` if the marking did not commit)."""
        with self._lock:
            batch, self._confirmed = self._confirmed, []
        return batch

    def marked(self, batch: list[tuple[int, str]]) -> None:
        """These confirmed events are marked sent in the store: let their claims go."""
        self.published += len(batch)
        for _, order_id in batch:
            with self._lock:
                self._confirmed_ids.discard(order_id)
            self.release(order_id)

    def give_back(self, batch: list[tuple[int, str]]) -> None:
        """Marking these failed: keep them (and their claims) for the next try."""
        with self._lock:
            self._confirmed[:0] = batch

    def flush_marks(self) -> None:
        """Mark the events confirmed on the HTTP path as sent, in one transaction."""
        batch = self.take_confirmed()
        if not batch:
            return
        try:
            self.store.mark_sent([seq for seq, _ in batch])
        except BaseException:
            self.give_back(batch)  # try again on the next pass; the claims stay held
            raise
        self.marked(batch)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self.flush_marks()
            except Exception:
                log.exception("outbox: marking sent events failed; trying again")
            if self._stop.is_set():
                break
            if not self.bus.connected or self.bus.blocked.is_set():
                continue
            try:
                self._relay_once()
            except Exception:
                log.exception("outbox: relay pass failed; trying again")

    def _relay_once(self) -> None:
        sent: list[int] = []
        waiting: list[tuple[int, Future]] = []
        claimed: list[str] = []
        for seq, order_id, event in self.store.unsent():
            if not self.claim(order_id):
                continue
            claimed.append(order_id)
            if self.store.is_sent(order_id):  # sent since the list was read
                continue
            event_id = json.loads(event)["event_id"]
            waiting.append((seq, self.bus.publish(order_placed_message(event, order_id,
                                                                       event_id))))
        deadline = time.monotonic() + self.timeout  # one wait for the whole batch
        try:
            for seq, fut in waiting:
                try:
                    fut.result(max(deadline - time.monotonic(), 0))
                    sent.append(seq)
                except (BrokerUnavailable, FutureTimeout):
                    pass
        finally:
            self.store.mark_sent(sent)
            self.published += len(sent)
            for order_id in claimed:
                self.release(order_id)
