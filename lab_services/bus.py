"""The services' one RabbitMQ connection: confirmed publishing, manual acks, reconnection.

A `Bus` owns a pika SelectConnection on a background I/O thread. It declares the topology
on every connect, consumes with manual acks, and publishes with publisher confirms that are
*pipelined*: many publishes are in flight at once and the broker's (usually `multiple`)
confirms settle them. An input is acked only when every output its handler produced has
been confirmed, so a crash anywhere loses nothing; it only causes a redelivery.

Other threads (Flask requests) publish through `publish()`, which hands the work to the I/O
thread with `add_callback_threadsafe`: pika connections are not thread-safe.

Reconnection is kept out of the protocol code, as in pika's asynchronous consumer example:
the connection only reports that it closed; the outer loop in `_run` owns the backoff.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions
from pika.spec import Basic

from lab_services import topology as topo
from lab_services.events import InvalidEvent

log = logging.getLogger(__name__)

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
PERSISTENT = pika.DeliveryMode.Persistent

# Headers the lab writes on messages it dead-letters or retries itself.
H_REASON = "x-reject-reason"
H_ATTEMPTS = "x-attempts"
H_ORIGINAL_EXCHANGE = "x-original-exchange"
H_ORIGINAL_ROUTING_KEY = "x-original-routing-key"
H_ORIGINAL_QUEUE = "x-original-queue"


class BrokerUnavailable(RuntimeError):
    """The broker cannot take a message now (not connected, nacked, or no confirm in time)."""


@dataclass
class BusConfig:
    """Connection settings; every field falls back to an environment variable."""

    amqp_url: str = field(default_factory=lambda: os.environ.get("AMQP_URL", DEFAULT_AMQP_URL))
    prefetch: int = field(default_factory=lambda: int(os.environ.get("PREFETCH", "200")))
    queue_type: str = field(default_factory=lambda: os.environ.get("LAB_QUEUE_TYPE", "classic"))
    heartbeat: int = field(default_factory=lambda: int(os.environ.get("AMQP_HEARTBEAT", "30")))
    backoff_initial: float = 0.25
    backoff_max: float = field(
        default_factory=lambda: float(os.environ.get("RECONNECT_MAX_DELAY", "5"))
    )
    max_retries: int = len(topo.RETRY_DELAYS_MS)

    def parameters(self) -> pika.URLParameters:
        """pika connection parameters for this config."""
        params = pika.URLParameters(self.amqp_url)
        params.heartbeat = self.heartbeat
        params.connection_attempts = 1
        params.socket_timeout = 5
        params.blocked_connection_timeout = 60
        return params


@dataclass(frozen=True)
class Outgoing:
    """A message to publish: where to, the body, and its AMQP properties."""

    exchange: str
    routing_key: str
    body: bytes
    properties: pika.BasicProperties = field(
        default_factory=lambda: pika.BasicProperties(delivery_mode=PERSISTENT)
    )


@dataclass
class Delivery:
    """A message handed to a consumer's handler."""

    queue: str
    exchange: str
    routing_key: str
    body: bytes
    properties: pika.BasicProperties
    redelivered: bool
    delivery_tag: int
    # The handler may note what it learned (e.g. the order id) for the before-ack hook.
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, Any]:
        """The message headers (never None)."""
        return dict(self.properties.headers or {})

    @property
    def attempts(self) -> int:
        """How many times a handler has already failed on this message."""
        return int(self.headers.get(H_ATTEMPTS, 0))


Handler = Callable[[Delivery], list[Outgoing]]
BeforeAck = Callable[[Delivery], None]


@dataclass
class _Consumer:
    queue: str
    handler: Handler
    before_ack: BeforeAck | None
    retry_queues: tuple[str, ...]
    unit_of_work: Callable[[], AbstractContextManager] | None


@dataclass
class _InFlight:
    delivery: Delivery
    consumer: _Consumer
    outstanding: int


def dead_letter(delivery: Delivery, reason: str) -> Outgoing:
    """The copy of a delivery that goes to the dead-letter exchange, with the reason."""
    headers = delivery.headers
    headers.update(
        {
            H_REASON: reason,
            H_ORIGINAL_EXCHANGE: delivery.exchange,
            H_ORIGINAL_ROUTING_KEY: delivery.routing_key,
            H_ORIGINAL_QUEUE: delivery.queue,
        }
    )
    return Outgoing(topo.DEAD_LETTERS, delivery.routing_key, delivery.body,
                    _copy_properties(delivery.properties, headers))


def _copy_properties(props: pika.BasicProperties, headers: dict[str, Any]) -> pika.BasicProperties:
    return pika.BasicProperties(
        content_type=props.content_type or "application/json",
        delivery_mode=PERSISTENT,
        message_id=props.message_id,
        correlation_id=props.correlation_id,
        timestamp=props.timestamp,
        type=props.type,
        app_id=props.app_id,
        headers=headers,
    )


class _CoalescingConnection(pika.SelectConnection):
    """A SelectConnection that sends the frames of one I/O-loop turn in one socket write.

    pika writes every frame with its own `send` call: a publish is three frames and an ack
    one more. Draining a backlog, those system calls took 40% of the consumer's time here.
    Frames are kept in order and flushed at the end of the loop turn that produced them.
    (This overrides one internal method of pika 1.x; if it ever goes away, pika simply
    writes frame by frame again.)
    """

    def _output_marshaled_frames(self, marshaled_frames: Any) -> None:
        pending = getattr(self, "_lab_pending_frames", None)
        if pending is None:
            pending = self._lab_pending_frames = []
        if not pending:
            self.ioloop.add_callback_threadsafe(self._lab_flush_frames)
        for frame in marshaled_frames:
            self.bytes_sent += len(frame)
            self.frames_sent += 1
            pending.append(frame)

    def _lab_flush_frames(self) -> None:
        pending, self._lab_pending_frames = self._lab_pending_frames, []
        if pending and self._transport is not None:
            self._adapter_emit_data(b"".join(pending))


class Bus:
    """One long-lived RabbitMQ connection shared by a service's consumers and HTTP threads."""

    def __init__(self, config: BusConfig | None = None, *, name: str = "service") -> None:
        self.config = config or BusConfig()
        self.name = name
        self.topology = topo.build_topology(self.config.queue_type)
        self._consumers: list[_Consumer] = []
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._connection: pika.SelectConnection | None = None
        self._channel: Any = None
        self._next_seq = 1
        self._pending: OrderedDict[int, Future | _InFlight] = OrderedDict()
        # Delivery tag -> settled?, in delivery order; the settled prefix gets acked.
        self._unsettled: OrderedDict[int, bool] = OrderedDict()
        self._burst: list[tuple[_Consumer, Delivery]] = []
        self._burst_scheduled = False
        self._was_ready = False
        self.reconnects = 0  # connections re-established after a loss
        self.reconnect_attempts = 0
        self.connected_once = threading.Event()

    # ---- public API -------------------------------------------------------------------

    def consume(
        self,
        queue: str,
        handler: Handler,
        *,
        before_ack: BeforeAck | None = None,
        retry_queues: tuple[str, ...] = (),
        unit_of_work: Callable[[], AbstractContextManager] | None = None,
    ) -> None:
        """Register a handler for a queue (before `start`).

        `unit_of_work` wraps each burst of deliveries (e.g. one store transaction); the
        handlers' outputs are published only after it has exited, i.e. committed.
        """
        self._consumers.append(_Consumer(queue, handler, before_ack, retry_queues,
                                         unit_of_work))

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
        try:
            conn.ioloop.add_callback_threadsafe(lambda: self._publish_now(out, fut))
        except Exception as exc:  # the loop closed under us
            fut.set_exception(BrokerUnavailable(f"connection is closing: {exc}"))
        return fut

    def publish_confirmed(self, out: Outgoing, timeout: float = 5.0) -> None:
        """Publish and wait for the broker's confirm; raise BrokerUnavailable otherwise."""
        try:
            self.publish(out).result(timeout)
        except FutureTimeout:
            raise BrokerUnavailable(f"no publisher confirm within {timeout:.1f}s") from None

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
        while not self._stopping.is_set():
            self._was_ready = False
            try:
                self._connection = _CoalescingConnection(
                    self.config.parameters(),
                    on_open_callback=self._on_connection_open,
                    on_open_error_callback=self._on_connection_open_error,
                    on_close_callback=self._on_connection_closed,
                )
                self._connection.ioloop.start()
            except Exception:
                log.exception("%s: I/O loop failed", self.name)
            self._ready.clear()
            self._fail_pending(BrokerUnavailable("connection to the broker was lost"))
            if self._stopping.is_set():
                break
            # Capped exponential backoff, reset once a connection got as far as consuming.
            attempt = 0 if self._was_ready else attempt + 1
            delay = min(self.config.backoff_initial * (2 ** attempt), self.config.backoff_max)
            log.warning("%s: broker connection down; reconnecting in %.2fs", self.name, delay)
            self.reconnect_attempts += 1
            self._stopping.wait(delay)
        self._connection = None

    def _close_connection(self) -> None:
        conn = self._connection
        if conn is not None and not (conn.is_closing or conn.is_closed):
            conn.close()

    # ---- connection and channel --------------------------------------------------------

    def _on_connection_open(self, connection: pika.SelectConnection) -> None:
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_connection_open_error(self, connection: Any, error: Exception) -> None:
        log.info("%s: cannot connect to %s: %s", self.name, self._safe_url(), error)
        connection.ioloop.stop()

    def _on_connection_closed(self, connection: Any, reason: Exception) -> None:
        self._ready.clear()
        self._channel = None
        if not self._stopping.is_set():
            log.warning("%s: connection closed: %s", self.name, reason)
        connection.ioloop.stop()

    def _on_channel_open(self, channel: Any) -> None:
        self._channel = channel
        # Publish sequence numbers and delivery tags both start again on a new channel.
        self._next_seq = 1
        self._unsettled.clear()
        self._burst.clear()
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_cancel_callback(self._on_consumer_cancelled)
        channel.confirm_delivery(
            ack_nack_callback=self._on_confirm, callback=lambda _frame: self._declare()
        )

    def _on_channel_closed(self, channel: Any, reason: Exception) -> None:
        # A channel closed by the broker (e.g. a queue declared with other arguments)
        # leaves nothing useful on this connection: start over.
        log.warning("%s: channel closed: %s", self.name, reason)
        self._ready.clear()
        self._close_connection()

    def _on_consumer_cancelled(self, _frame: Any) -> None:
        log.warning("%s: the broker cancelled a consumer (queue deleted?); reconnecting", self.name)
        self._close_connection()

    def _declare(self) -> None:
        ch = self._channel
        steps: list[Callable[[Callable], None]] = []
        for ex in self.topology.exchanges:
            steps.append(lambda cb, ex=ex: ch.exchange_declare(
                exchange=ex.name, exchange_type=ex.type, durable=ex.durable, callback=cb))
        for q in self.topology.queues:
            steps.append(lambda cb, q=q: ch.queue_declare(
                queue=q.name, durable=q.durable, arguments=dict(q.arguments), callback=cb))
        for b in self.topology.bindings:
            steps.append(lambda cb, b=b: ch.queue_bind(
                queue=b.queue, exchange=b.exchange, routing_key=b.routing_key, callback=cb))
        steps.append(lambda cb: ch.basic_qos(prefetch_count=self.config.prefetch, callback=cb))
        self._chain(steps, self._start_consuming)

    def _chain(self, steps: list[Callable[[Callable], None]], done: Callable[[], None]) -> None:
        if not steps:
            done()
            return
        first, rest = steps[0], steps[1:]
        first(lambda _frame: self._chain(rest, done))

    def _start_consuming(self) -> None:
        for consumer in self._consumers:
            self._channel.basic_consume(
                queue=consumer.queue,
                on_message_callback=lambda ch, m, p, b, c=consumer: self._on_message(c, m, p, b),
                auto_ack=False,
            )
        self._was_ready = True
        if self.connected_once.is_set():
            self.reconnects += 1
        self._ready.set()
        self.connected_once.set()
        log.info("%s: connected to %s, consuming %s", self.name, self._safe_url(),
                 [c.queue for c in self._consumers] or "nothing")

    # ---- consuming --------------------------------------------------------------------

    def _on_message(self, consumer: _Consumer, method: Basic.Deliver, props: Any, body: bytes):
        # Deliveries that arrive in one socket read are handled together, after the read:
        # one store transaction per burst instead of one per message.
        delivery = Delivery(consumer.queue, method.exchange, method.routing_key, body, props,
                            method.redelivered, method.delivery_tag)
        self._unsettled[method.delivery_tag] = False
        self._burst.append((consumer, delivery))
        if not self._burst_scheduled:
            self._burst_scheduled = True
            self._connection.ioloop.call_later(0, self._handle_burst)

    def _handle_burst(self) -> None:
        self._burst_scheduled = False
        burst, self._burst = self._burst, []
        for consumer in {c.queue: c for c, _ in burst}.values():
            deliveries = [d for c, d in burst if c is consumer]
            try:
                with consumer.unit_of_work() if consumer.unit_of_work else nullcontext():
                    results = [(d, self._handle(consumer, d)) for d in deliveries]
            except Exception:
                # The batch did not commit: give every message back to be tried again.
                log.exception("%s: a batch of %d failed to commit; requeueing it",
                              self.name, len(deliveries))
                for d in deliveries:
                    self._nack(d.delivery_tag)
                continue
            for delivery, outputs in results:
                inflight = _InFlight(delivery, consumer, len(outputs))
                if not outputs:
                    self._settle(inflight)
                for out in outputs:
                    self._publish_now(out, inflight)

    def _handle(self, consumer: _Consumer, delivery: Delivery) -> list[Outgoing]:
        try:
            return consumer.handler(delivery)
        except InvalidEvent as exc:
            log.warning("%s: dead-lettering a malformed message from %s: %s",
                        self.name, consumer.queue, exc.reason)
            return [dead_letter(delivery, exc.reason)]
        except Exception as exc:
            return [self._retry_or_dead_letter(consumer, delivery, exc)]

    def _retry_or_dead_letter(self, consumer: _Consumer, delivery: Delivery, exc: Exception):
        attempts = delivery.attempts + 1
        error = f"{exc.__class__.__name__}: {exc}"
        if attempts <= min(len(consumer.retry_queues), self.config.max_retries):
            log.warning("%s: handler failed (attempt %d), retrying later: %s",
                        self.name, attempts, error)
            headers = delivery.headers
            headers.update({H_ATTEMPTS: attempts, "x-last-error": error})
            return Outgoing("", consumer.retry_queues[attempts - 1], delivery.body,
                            _copy_properties(delivery.properties, headers))
        log.error("%s: handler failed %d times, dead-lettering: %s", self.name, attempts, error)
        out = dead_letter(delivery, f"handler failed after {attempts} attempts: {error}")
        out.properties.headers[H_ATTEMPTS] = attempts
        return out

    def _settle(self, inflight: _InFlight) -> None:
        if inflight.consumer.before_ack is not None:
            inflight.consumer.before_ack(inflight.delivery)
        tag = inflight.delivery.delivery_tag
        if tag in self._unsettled:
            self._unsettled[tag] = True
        self._ack_settled_prefix()

    def _ack_settled_prefix(self) -> None:
        """Ack, with one `multiple` ack, the oldest deliveries whose work is all confirmed.

        Only a contiguous prefix may be acked with `multiple`: a later delivery can be done
        while an earlier one still waits for its confirm.
        """
        last, count = None, 0
        while self._unsettled:
            tag, done = next(iter(self._unsettled.items()))
            if not done:
                break
            self._unsettled.popitem(last=False)
            last, count = tag, count + 1
        if last is not None and self._channel is not None and self._channel.is_open:
            self._channel.basic_ack(last, multiple=count > 1)

    def _nack(self, tag: int) -> None:
        """Give a delivery back to its queue, and ack whatever that unblocks."""
        self._unsettled.pop(tag, None)
        if self._channel is not None and self._channel.is_open:
            self._channel.basic_nack(tag, requeue=True)
        self._ack_settled_prefix()

    # ---- publishing and confirms ------------------------------------------------------

    def _publish_now(self, out: Outgoing, waiter: Future | _InFlight) -> None:
        ch = self._channel
        if ch is None or not ch.is_open:
            if isinstance(waiter, Future) and not waiter.done():
                waiter.set_exception(BrokerUnavailable("channel is not open"))
            return
        seq = self._next_seq
        self._next_seq += 1
        self._pending[seq] = waiter
        try:
            ch.basic_publish(out.exchange, out.routing_key, out.body, out.properties)
        except Exception as exc:
            self._pending.pop(seq, None)
            if isinstance(waiter, Future) and not waiter.done():
                waiter.set_exception(BrokerUnavailable(f"publish failed: {exc}"))

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        ok = isinstance(method, Basic.Ack)
        tag = method.delivery_tag
        if method.multiple:
            settled = []
            for seq in self._pending:
                if seq > tag:
                    break
                settled.append(seq)
        else:
            settled = [tag]
        for seq in settled:
            waiter = self._pending.pop(seq, None)
            if waiter is not None:
                self._resolve(waiter, ok)

    def _resolve(self, waiter: Future | _InFlight, ok: bool) -> None:
        if isinstance(waiter, Future):
            if waiter.done():
                return
            if ok:
                waiter.set_result(True)
            else:
                waiter.set_exception(BrokerUnavailable("the broker refused the message (nack)"))
            return
        if not ok:
            # An output was refused: give the input back so it is processed again.
            if waiter.outstanding > 0:
                waiter.outstanding = -1
                self._nack(waiter.delivery.delivery_tag)
            return
        if waiter.outstanding <= 0:
            return
        waiter.outstanding -= 1
        if waiter.outstanding == 0:
            self._settle(waiter)

    def _fail_pending(self, exc: Exception) -> None:
        pending, self._pending = self._pending, OrderedDict()
        for waiter in pending.values():
            if isinstance(waiter, Future) and not waiter.done():
                waiter.set_exception(exc)

    def _safe_url(self) -> str:
        p = self.config.parameters()
        return f"amqp://{p.host}:{p.port}/{p.virtual_host}"
