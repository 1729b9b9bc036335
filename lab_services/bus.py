"""The services' one RabbitMQ connection: it connects, declares, consumes, and reconnects.

A `Bus` owns a pika SelectConnection on a background I/O thread. On every connect it opens
a channel, builds a fresh `Session` for it (sequence numbers, confirm waiters, unsettled
inputs: see `session.py`), declares the topology and starts consuming. When the connection
goes, the session goes with it, and the outer loop in `_run` owns the backoff, as in pika's
asynchronous consumer example.

Other threads (Flask requests) publish through `publish()`, which hands the work to the I/O
thread with `add_callback_threadsafe`: pika connections are not thread-safe.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import AbstractContextManager
from typing import Any

import pika
import pika.exceptions

from lab_services import pika_compat
from lab_services import topology as topo
from lab_services.declarations import Step, declaration_steps, run_chain
from lab_services.messages import (
    PERSISTENT,
    BeforeAck,
    BrokerUnavailable,
    Consumer,
    Delivery,
    Handler,
    Outgoing,
    Unpublishable,
    Unroutable,
    dead_letter,
)
from lab_services.redeliveries import DeliveryCounter
from lab_services.retry import NO_RETRY, RetryPolicy, backoff_s
from lab_services.session import Session
from lab_services.settings import BusSettings

__all__ = ["PERSISTENT", "Bus", "BrokerUnavailable", "Delivery", "Outgoing", "Unpublishable",
           "Unroutable", "dead_letter"]

log = logging.getLogger(__name__)

pika_compat.install()

STABLE_AFTER_S = 5.0


def connection_parameters(url: str, settings: BusSettings) -> pika.URLParameters:
    """pika connection parameters for one broker address."""
    params = pika.URLParameters(url)
    params.heartbeat = settings.heartbeat
    params.connection_attempts = 1
    params.socket_timeout = 5
    params.blocked_connection_timeout = 60
    return params


class Bus:
    """One long-lived RabbitMQ connection shared by a service's consumers and HTTP threads."""

    def __init__(self, settings: BusSettings | None = None, *, name: str = "service",
                 counter: DeliveryCounter | None = None) -> None:
        self.settings = settings or BusSettings()
        self.name = name
        self.counter = counter
        self.topology = topo.build_topology(self.settings.queue_type)
        self._consumers: list[Consumer] = []
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self.blocked = threading.Event()  # the broker refuses publishes (memory/disk alarm)
        self._connection: pika.SelectConnection | None = None
        self._session: Session | None = None
        self._was_ready = False
        self._ready_at = 0.0
        self.reconnects = 0  # connections re-established after a loss
        self.reconnect_attempts = 0
        self.connected_once = threading.Event()
        self.totals: dict[str, int] = {}
        # Why the bus is not connected, when it knows (a refused declaration, a refused
        # connection); None once connected. /health shows it.
        self.problem: str | None = None
        self._declaring: str | None = None  # the declaration awaiting the broker's answer
        self._consumer_tags: dict[str, Consumer] = {}  # this channel's consumers, by tag
        self.redeclared = 0  # queues declared again after the broker cancelled their consumer

    # ---- public API -------------------------------------------------------------------

    def consume(self, queue: str, handler: Handler, *, retry: RetryPolicy = NO_RETRY,
                before_ack: BeforeAck | None = None,
                unit_of_work: Callable[[], AbstractContextManager] | None = None,
                prepare: BeforeAck | None = None) -> None:
        """Register a handler for a queue (before `start`).

        `unit_of_work` wraps each burst of deliveries (e.g. one store transaction); the
        handlers' outputs are published only after it has exited, i.e. committed.
        `prepare` runs on each delivery before the unit of work opens.
        """
        self._consumers.append(Consumer(queue, handler, retry, before_ack, unit_of_work,
                                        prepare))

    def start(self) -> Bus:
        """Start the I/O thread; it connects, and reconnects, until `close`."""
        self._thread = threading.Thread(target=self._run, name=f"{self.name}-amqp", daemon=True)
        self._thread.start()
        return self

    @property
    def connected(self) -> bool:
        """True while the connection is open, the topology declared and consumers running."""
        return self._ready.is_set()

    def wait_connected(self, timeout: float) -> bool:
        """Block until connected or the timeout passes; say whether connected."""
        return self._ready.wait(timeout)

    def publish(self, out: Outgoing) -> Future:
        """Publish from any thread; the future resolves when the broker confirms it."""
        fut: Future = Future()
        conn = self._connection
        if not self._ready.is_set() or conn is None:
            fut.set_exception(BrokerUnavailable("not connected to the broker"))
            return fut
        if self.blocked.is_set():
            fut.set_exception(BrokerUnavailable("the broker is blocking publishers "
                                                "(resource alarm)"))
            return fut

        def on_io_thread() -> None:
            session = self._session
            if session is None:
                if not fut.done():
                    fut.set_exception(BrokerUnavailable("channel is not open"))
                return
            session.publish(out, fut)

        try:
            conn.ioloop.add_callback_threadsafe(on_io_thread)
        except Exception as exc:  # the loop closed under us
            fut.set_exception(BrokerUnavailable(f"connection is closing: {exc}"))
        return fut

    def publish_confirmed(self, out: Outgoing, timeout: float | None = None) -> None:
        """Publish and wait for the broker's confirm; raise BrokerUnavailable otherwise."""
        timeout = self.settings.confirm_timeout if timeout is None else timeout
        fut = self.publish(out)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fut.result(min(0.05, max(deadline - time.monotonic(), 0)))
                return
            except FutureTimeout:
                pass
            # A resource alarm holds the confirm back for as long as it lasts: say so now.
            if self.blocked.is_set():
                raise BrokerUnavailable("the broker is blocking publishers (resource alarm)")
            if time.monotonic() >= deadline:
                raise BrokerUnavailable(f"no publisher confirm within {timeout:.1f}s")

    def stats(self) -> dict[str, int]:
        """Counts of what the bus did (published, returned, dead-lettered, ...), all sessions."""
        session = self._session
        # Copies: the I/O thread adds keys while an HTTP thread reads them.
        current = dict(session.stats) if session else {}
        totals = dict(self.totals)
        return {k: totals.get(k, 0) + current.get(k, 0) for k in set(totals) | set(current)}

    def close(self) -> None:
        """Close the connection cleanly (unacked messages go back to their queues)."""
        self._stopping.set()
        conn = self._connection
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.ioloop.add_callback_threadsafe(self._close_connection)
        if self._thread is not None:
            self._thread.join(timeout=10)

    # ---- the outer loop: connect, run, back off, again --------------------------------

    def _run(self) -> None:
        attempt = 0
        urls = self.settings.amqp_urls
        while not self._stopping.is_set():
            self._was_ready = False
            url = urls[self.reconnect_attempts % len(urls)]
            connection = None
            try:
                connection = pika_compat.CoalescingConnection(
                    connection_parameters(url, self.settings),
                    on_open_callback=self._on_connection_open,
                    on_open_error_callback=self._on_connection_open_error,
                    on_close_callback=self._on_connection_closed,
                )
                self._connection = connection
                connection.ioloop.start()
            except Exception:
                log.exception("%s: I/O loop failed", self.name)
            self._ready.clear()
            self.blocked.clear()
            self._end_session(BrokerUnavailable("connection to the broker was lost"))
            if connection is not None:
                # Each attempt has its own poller and sockets: close them, or every
                # reconnect leaks file descriptors.
                with contextlib.suppress(Exception):
                    connection.ioloop.close()
            if self._stopping.is_set():
                break
            # Capped exponential backoff, reset only once a connection stayed up a while: a
            # connection that consumes and is then closed at once (a broker refusing one
            # message) must not reconnect in a tight loop.
            stayed_up = self._was_ready and time.monotonic() - self._ready_at > STABLE_AFTER_S
            attempt = 0 if stayed_up else attempt + 1
            # Bounded: a conflict that only an operator can resolve (a queue declared with
            # other arguments) is retried at most every reconnect_max_delay seconds.
            delay = backoff_s(attempt + 1, initial=0.25, cap=self.settings.reconnect_max_delay)
            log.warning("%s: broker connection down; reconnecting in %.2fs", self.name, delay)
            self.reconnect_attempts += 1
            self._stopping.wait(delay)
        self._connection = None

    def _end_session(self, exc: Exception) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.fail_all(exc)
            for k, v in session.stats.items():
                self.totals[k] = self.totals.get(k, 0) + v

    def _close_connection(self) -> None:
        conn = self._connection
        if conn is not None and not (conn.is_closing or conn.is_closed):
            conn.close()

    # ---- connection and channel --------------------------------------------------------

    def _on_connection_open(self, connection: pika.SelectConnection) -> None:
        connection.add_on_connection_blocked_callback(self._on_blocked)
        connection.add_on_connection_unblocked_callback(self._on_unblocked)
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_blocked(self, _connection: Any, frame: Any) -> None:
        log.warning("%s: the broker blocks publishers: %s", self.name,
                    getattr(frame.method, "reason", "resource alarm"))
        self.blocked.set()

    def _on_unblocked(self, _connection: Any, _frame: Any) -> None:
        log.info("%s: the broker accepts publishers again", self.name)
        self.blocked.clear()

    def _on_connection_open_error(self, connection: Any, error: Exception) -> None:
        log.info("%s: cannot connect to %s: %s", self.name, self._safe_url(), error)
        self.problem = f"cannot connect to {self._safe_url()}: {error}"[:500]
        connection.ioloop.stop()

    def _on_connection_closed(self, connection: Any, reason: Exception) -> None:
        self._ready.clear()
        if not self._stopping.is_set():
            log.warning("%s: connection closed: %s", self.name, reason)
        connection.ioloop.stop()

    def _on_channel_open(self, channel: Any) -> None:
        self._end_session(BrokerUnavailable("channel replaced"))
        conn = self._connection
        self._session = Session(
            channel, name=self.name, counter=self.counter,
            delivery_limit=self.settings.delivery_limit,
            schedule=lambda delay, fn: conn.ioloop.call_later(delay, fn))
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_cancel_callback(self._on_consumer_cancelled)
        channel.add_on_return_callback(self._session.on_return)
        channel.confirm_delivery(
            ack_nack_callback=self._session.on_confirm, callback=lambda _frame: self._declare())

    def _on_channel_closed(self, channel: Any, reason: Exception) -> None:
        # A channel closed by the broker (e.g. a queue declared with other arguments)
        # leaves nothing useful on this connection: start over.
        declaring, self._declaring = self._declaring, None
        code, text = getattr(reason, "reply_code", None), str(getattr(reason, "reply_text", ""))
        if declaring and code == 406:  # PRECONDITION_FAILED
            # Another client declared it differently: nothing here can fix that, so say
            # exactly what conflicts, and keep retrying (bounded) until an operator does.
            self.problem = (f"the broker refused to declare {declaring}: "
                            f"{getattr(reason, 'reply_text', reason)}")[:1000]
            log.error("%s: %s; retrying", self.name, self.problem)
        elif code == 404 and "no queue" in text:
            # A queue a message was meant for is missing (session.py checks each one just
            # before the publish): nothing was routed past it. The next connection declares
            # it again before it consumes, and the inputs in flight come back.
            self.totals["missing_destination"] = self.totals.get("missing_destination", 0) + 1
            log.warning("%s: a queue a message was meant for is missing (%s): nothing was "
                        "routed; reconnecting declares it again and takes the inputs in "
                        "flight again", self.name, text[:300])
        else:
            log.warning("%s: channel closed: %s", self.name, reason)
        self._ready.clear()
        self._close_connection()

    def _on_consumer_cancelled(self, frame: Any) -> None:
        # The broker cancels a consumer when its queue is deleted. Declare the topology
        # again and consume anew on the same channel, at once: the deliveries in hand are
        # still handled and acked (an ack for a deleted queue is harmless), and the queue
        # is back within one round trip. A message published meanwhile is not lost: one
        # that no queue takes is returned (`mandatory`), and one meant for several queues
        # is stopped by its publisher's check that each exists (session.py); both are
        # published again.
        session = self._session
        consumer = self._consumer_tags.pop(getattr(frame.method, "consumer_tag", None), None)
        if session is None or consumer is None:
            log.warning("%s: the broker cancelled an unknown consumer; reconnecting", self.name)
            self._close_connection()
            return
        log.warning("%s: the broker cancelled the consumer of %r (queue deleted?); declaring "
                    "it again", self.name, consumer.queue)
        self.redeclared += 1
        # The queue and its bindings first, in one write: a queue that exists unbound, even
        # for one round trip, passes a publisher's check and then takes nothing.
        queue = next((q for q in self.topology.queues if q.name == consumer.queue), None)
        if queue is not None:
            pika_compat.declare_queue(
                session.channel, queue.name, durable=queue.durable, arguments=queue.arguments,
                bindings=[(b.exchange, b.routing_key)
                          for b in self.topology.bindings_of(queue.name)])
        self._chain(self._declare_steps(session.channel),
                    lambda: self._consume(session, consumer))

    def _declare(self) -> None:
        session = self._session
        if session is None:
            return
        self._chain(self._declare_steps(session.channel),
                    lambda: self._start_consuming(session))

    def _chain(self, steps: list[Step], done: Callable[[], None]) -> None:
        run_chain(steps, done, lambda what: setattr(self, "_declaring", what))

    def _declare_steps(self, ch: Any) -> list[Step]:
        return declaration_steps(ch, self.topology, self.settings.prefetch)

    def _start_consuming(self, session: Session) -> None:
        if session is not self._session:
            return
        self._consumer_tags = {}
        for consumer in self._consumers:
            self._consume(session, consumer)
        self._was_ready = True
        self._ready_at = time.monotonic()
        if self.connected_once.is_set():
            self.reconnects += 1
        self.problem = None
        self._ready.set()
        self.connected_once.set()
        log.info("%s: connected to %s, consuming %s", self.name, self._safe_url(),
                 [c.queue for c in self._consumers] or "nothing")

    def _consume(self, session: Session, consumer: Consumer) -> None:
        if session is not self._session:
            return
        tag = session.channel.basic_consume(
            queue=consumer.queue,
            on_message_callback=lambda _ch, meth, props, body, c=consumer:
                session.on_message(c, meth, props, body),
            auto_ack=False,
        )
        self._consumer_tags[tag] = consumer

    def _safe_url(self) -> str:
        conn = self._connection
        p = conn.params if conn is not None else pika.URLParameters(self.settings.amqp_url)
        return f"amqp://{p.host}:{p.port}/{p.virtual_host}"
