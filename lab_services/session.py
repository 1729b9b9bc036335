"""One channel's worth of state: publish sequence numbers, confirm waiters, unsettled inputs.

A `Session` is built for every new channel and thrown away with it, as pika's reconnecting
consumer example rebuilds its consumer on each connect: nothing is reset by hand. Its
publishing half (sequence numbers, confirms, returns) is `publishing.Publisher`.

The rules it keeps:
- An input is acked only when every output its handler produced has been confirmed, with
  one `multiple` ack over the contiguous settled prefix (never past an unsettled tag).
- An input whose output cannot be delivered is not requeued at once (a hot loop): it goes
  to its retry tier, or is dead-lettered with the reason. Only if even that fails is it
  handed back to the broker, after a backoff.
- A redelivered input is handled alone, in a transaction of its own, and nothing else is
  handled until it is settled; its count is charged durably just before. If the process
  dies, only the message in hand was charged. Past the delivery limit a message is
  dead-lettered without running the handler, so a message that kills the process cannot
  loop forever, and the orders that shared its burst or prefetch window lose nothing.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from lab_services import messages as m
from lab_services.events import InvalidEvent
from lab_services.messages import BrokerUnavailable, Unpublishable
from lab_services.publishing import Publisher
from lab_services.redeliveries import DeliveryCounter, MemoryDeliveryCounter, delivery_key
from lab_services.retry import backoff_s

log = logging.getLogger(__name__)


@dataclass
class InFlight:
    """An input whose outputs are being published; acked when `outstanding` reaches 0."""

    delivery: m.Delivery
    consumer: m.Consumer
    outstanding: int
    # True once the input was sent to a retry tier or the DLQ instead: if that copy fails
    # too, the broker gets the input back (after a backoff).
    rerouted: bool = False
    failed: bool = False


Scheduler = Callable[[float, Callable[[], None]], Any]


class Session(Publisher):
    """The state of one open channel; the bus makes a new one on every (re)connect."""

    def __init__(self, channel: Any, *, name: str, schedule: Scheduler,
                 counter: DeliveryCounter | None = None, delivery_limit: int = 5) -> None:
        super().__init__(channel, name=name, schedule=schedule)
        self.counter = counter or MemoryDeliveryCounter()
        self.delivery_limit = delivery_limit
        # Delivery tag -> settled?, in delivery order; the settled prefix gets acked.
        self.unsettled: OrderedDict[int, bool] = OrderedDict()
        # Deliveries not yet handled, in delivery order.
        self.backlog: deque[tuple[m.Consumer, m.Delivery]] = deque()
        self.burst_scheduled = False
        # The redelivered message being handled alone (until it is settled or requeued).
        self.in_hand: m.Delivery | None = None
        self.batch_failures = 0
        # Per message: how often its retry or dead-letter copy could not be delivered.
        self.requeues: dict[str, int] = {}
        self.stats.update({"dead_lettered": 0, "retried": 0, "delivery_limit": 0,
                           "requeued": 0})

    def fail_all(self, exc: Exception) -> None:
        """The channel is gone: fail every waiting publisher (inputs will be redelivered)."""
        self.fail_pending(exc)
        self.unsettled.clear()
        self.backlog.clear()
        self.in_hand = None

    def _output_confirmed(self, waiter: InFlight) -> None:
        if waiter.failed or waiter.outstanding <= 0:
            return
        waiter.outstanding -= 1
        if waiter.outstanding == 0:
            self.settle(waiter)

    def _output_failed(self, waiter: InFlight, exc: Exception) -> None:
        if waiter.failed:
            return
        waiter.failed = True
        if self.closed:
            return  # the input will be redelivered on the next connection
        if waiter.rerouted:
            # Even the retry or dead-letter copy could not be delivered (no DLQ?): the
            # broker keeps the input and gets it back after a pause that grows each time.
            key = delivery_key(waiter.delivery)
            self.requeues[key] = self.requeues.get(key, 0) + 1
            if len(self.requeues) > 10_000:
                self.requeues.pop(next(iter(self.requeues)))
            self._requeue_later([waiter.delivery.delivery_tag], self.requeues[key])
            return
        self.reroute(waiter.delivery, waiter.consumer, str(exc),
                     permanent=isinstance(exc, Unpublishable),
                     broker_refused=isinstance(exc, BrokerUnavailable))

    # ---- consuming --------------------------------------------------------------------

    def on_message(self, consumer: m.Consumer, method: Any, props: Any, body: bytes) -> None:
        """Queue a delivery; the backlog is handled after this socket read."""
        delivery = m.Delivery(consumer.queue, method.exchange, method.routing_key, body, props,
                              method.redelivered, method.delivery_tag)
        self.unsettled[method.delivery_tag] = False
        self.backlog.append((consumer, delivery))
        self._schedule_backlog()

    def _schedule_backlog(self) -> None:
        if self.backlog and not self.burst_scheduled:
            self.burst_scheduled = True
            self.schedule(0, self.handle_burst)

    def handle_burst(self) -> None:
        """Handle the waiting deliveries in order: first deliveries in batches, redeliveries alone.

        A run of first deliveries is one unit of work (one transaction) per consumer. A
        redelivered message is taken in hand alone: its count is charged, it is handled in
        a transaction of its own, and nothing else is handled until it is settled. So if the
        process dies, the one message in hand is the only one charged for it: a poison
        message cannot spend the delivery limit of the orders that shared its burst.
        """
        self.burst_scheduled = False
        while self.backlog and self.in_hand is None and not self.closed:
            if self.backlog[0][1].redelivered:
                consumer, delivery = self.backlog.popleft()
                self.in_hand = delivery
                if not self._over_delivery_limit(consumer, delivery):
                    self._handle_batch(consumer, [delivery])
                continue
            run: list[tuple[m.Consumer, m.Delivery]] = []
            while self.backlog and not self.backlog[0][1].redelivered:
                run.append(self.backlog.popleft())
            for consumer in {c.queue: c for c, _ in run}.values():
                self._handle_batch(consumer, [d for c, d in run if c is consumer])

    def _handle_batch(self, consumer: m.Consumer, deliveries: list[m.Delivery]) -> None:
        """One unit of work over some deliveries of one consumer; then publish the outputs."""
        if consumer.prepare is not None:
            for d in deliveries:
                try:
                    consumer.prepare(d)
                except Exception as exc:  # raised again, and handled, in _handle
                    d.context["prepare_error"] = exc
        try:
            with consumer.unit_of_work() if consumer.unit_of_work else nullcontext():
                results = [(d, self._handle(consumer, d)) for d in deliveries]
        except Exception as exc:
            # The batch did not commit: nothing of it happened. Give it back after a
            # pause that grows while commits keep failing (disk full, lock held...).
            self.batch_failures += 1
            log.error("%s: a batch of %d failed to commit (%s: %s); requeueing it in "
                      "%.2fs", self.name, len(deliveries), exc.__class__.__name__,
                      str(exc)[:200], backoff_s(self.batch_failures))
            self._requeue_later([d.delivery_tag for d in deliveries])
            return
        self.batch_failures = 0
        for delivery, outputs in results:
            self.send_outputs(InFlight(delivery, consumer, len(outputs)), outputs)

    def send_outputs(self, inflight: InFlight, outputs: list[m.Outgoing]) -> None:
        """Publish an input's outputs; with none, the input is settled at once."""
        if not outputs:
            self.settle(inflight)
        for out in outputs:
            if inflight.failed:
                break
            self.publish(out, inflight)

    def _over_delivery_limit(self, consumer: m.Consumer, delivery: m.Delivery) -> bool:
        if not delivery.redelivered:
            return False
        key = delivery_key(delivery)
        try:
            count = self.counter.bump(key)
        except Exception as exc:  # a broken store must not stop the guard from working
            log.error("%s: cannot count a redelivery: %s", self.name, exc)
            return False
        delivery.context["delivery_key"] = key
        if count < self.delivery_limit:
            return False
        self.stats["delivery_limit"] += 1
        reason = (f"delivery limit exceeded ({count + 1} deliveries without being settled; "
                  f"DELIVERY_LIMIT={self.delivery_limit})")
        log.error("%s: dead-lettering a message from %s: %s", self.name, consumer.queue, reason)
        self.publish_rerouted(delivery, consumer,
                              m.dead_letter(delivery, reason, attempts=delivery.attempts), reason)
        return True

    def _handle(self, consumer: m.Consumer, delivery: m.Delivery) -> list[m.Outgoing]:
        try:
            failed_early = delivery.context.pop("prepare_error", None)
            if failed_early is not None:
                raise failed_early
            return consumer.handler(delivery)
        except InvalidEvent as exc:
            log.warning("%s: dead-lettering a malformed message from %s: %s",
                        self.name, consumer.queue, exc.reason[:200])
            self.stats["dead_lettered"] += 1
            return [m.dead_letter(delivery, exc.reason)]
        except Exception as exc:
            return [self._retry_or_dead_letter(consumer, delivery,
                                               f"{exc.__class__.__name__}: {exc}")]

    def _retry_or_dead_letter(self, consumer: m.Consumer, delivery: m.Delivery,
                              error: str) -> m.Outgoing:
        attempts = delivery.attempts + 1
        queue = consumer.retry.next_queue(attempts)
        if queue is not None:
            self.stats["retried"] += 1
            log.warning("%s: handler failed (attempt %d), retrying later: %s",
                        self.name, attempts, error[:200])
            return m.retry_copy(delivery, queue, attempts, error)
        self.stats["dead_lettered"] += 1
        log.error("%s: handler failed %d times, dead-lettering: %s", self.name, attempts,
                  error[:200])
        return m.dead_letter(delivery, f"handler failed after {attempts} attempts: {error}",
                             attempts=attempts)

    def reroute(self, delivery: m.Delivery, consumer: m.Consumer, error: str, *,
                permanent: bool, broker_refused: bool = False) -> None:
        """Send an input whose output failed to its retry tier, or to the DLQ if permanent.

        An output the broker refused (nacked, or returned as unroutable) says nothing about
        the message: a quorum queue without a majority or a full queue refuses every message
        alike. So that does not spend the message's attempts: it waits at the next tier, and
        then at the slowest one, as often as it takes, and is never dead-lettered for it.
        """
        if permanent:
            self.stats["dead_lettered"] += 1
            out = m.dead_letter(delivery, f"output could not be published: {error}",
                                attempts=delivery.attempts)
        elif broker_refused and consumer.retry.tiers:
            attempts = min(delivery.attempts + 1, consumer.retry.tiers)
            queue = consumer.retry.next_queue(attempts)
            self.stats["retried"] += 1
            log.warning("%s: the broker refused an output (attempt %d), retrying later: %s",
                        self.name, attempts, error[:200])
            out = m.retry_copy(delivery, queue, attempts, f"output failed: {error}")
        else:
            out = self._retry_or_dead_letter(consumer, delivery, f"output failed: {error}")
        self.publish_rerouted(delivery, consumer, out, error)

    def publish_rerouted(self, delivery: m.Delivery, consumer: m.Consumer, out: m.Outgoing,
                         error: str) -> None:
        """Publish the copy that replaces an input; the input is acked once it is confirmed."""
        inflight = InFlight(delivery, consumer, 1, rerouted=True)
        problem = self._send(out, inflight)
        if isinstance(problem, Unpublishable):
            # Even the sanitised copy did not encode: send the bare one, which always does.
            problem = self._send(m.bare_dead_letter(delivery, f"{error} / {problem}"), inflight)
        if problem is not None:
            self._fail(inflight, problem)

    # ---- acks ---------------------------------------------------------------------------

    def settle(self, inflight: InFlight) -> None:
        """An input's work is done and confirmed: run its hook and ack what can be acked."""
        if inflight.consumer.before_ack is not None:
            inflight.consumer.before_ack(inflight.delivery)
        key = inflight.delivery.context.get("delivery_key")
        if key is not None:
            try:
                self.counter.forget(key)
            except Exception as exc:  # only a count left behind: log, never stall the ack
                log.error("%s: cannot clear a redelivery count: %s", self.name, exc)
        tag = inflight.delivery.delivery_tag
        if tag in self.unsettled:
            self.unsettled[tag] = True
        self.ack_settled_prefix()
        self._release(inflight.delivery)

    def _release(self, delivery: m.Delivery) -> None:
        """The message in hand is settled or given back: the next ones may be handled."""
        if self.in_hand is delivery:
            self.in_hand = None
            self._schedule_backlog()

    def ack_settled_prefix(self) -> None:
        """Ack, with one `multiple` ack, the oldest deliveries whose work is all confirmed."""
        last, count = None, 0
        while self.unsettled:
            tag, done = next(iter(self.unsettled.items()))
            if not done:
                break
            self.unsettled.popitem(last=False)
            last, count = tag, count + 1
        if last is not None and not self.closed and self.channel is not None \
                and self.channel.is_open:
            self.channel.basic_ack(last, multiple=count > 1)

    def _requeue_later(self, tags: list[int], failures: int = 0) -> None:
        delay = backoff_s(max(self.batch_failures, failures, 1))
        self.schedule(delay, lambda: self.requeue(tags))

    def requeue(self, tags: list[int]) -> None:
        """Give deliveries back to their queue, and ack whatever that unblocks."""
        if self.closed:
            return
        for tag in tags:
            if tag not in self.unsettled:
                continue
            self.unsettled.pop(tag, None)
            self.stats["requeued"] += 1
            if self.channel is not None and self.channel.is_open:
                self.channel.basic_nack(tag, requeue=True)
        self.ack_settled_prefix()
        if self.in_hand is not None and self.in_hand.delivery_tag in tags:
            self._release(self.in_hand)
