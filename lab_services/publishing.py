"""The publishing half of a channel's session: numbered, mandatory, confirmed publishes.

The rules it keeps:
- A publish gets its sequence number only once pika has built its frames. A publish that
  fails to encode never reaches the broker, so numbering it would make every later confirm
  settle the wrong waiter.
- Publishes are `mandatory`: a message no queue takes comes back (`basic.return`, just
  before its confirm) and fails its waiter instead of counting as delivered.
- A message meant for several queues (an outcome: its notification queue and
  `order_status`) is not returned while only some of them are missing, so each is checked
  on the channel just before the publish (a passive, no-wait declare). A missing one makes
  the broker close the channel before the message is routed anywhere: its waiter fails,
  the input is redelivered on the next channel, and the bus declares the queue again first.

A waiter is a `Future` (a thread waiting for its confirm) or an input whose outputs are in
flight, which `session.Session` settles through `_output_confirmed` and `_output_failed`.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from pika.spec import Basic

from lab_services import messages as m
from lab_services import pika_compat
from lab_services.messages import BrokerUnavailable, Unpublishable, Unroutable

log = logging.getLogger(__name__)

Waiter = Any  # a Future, or what a subclass settles in _output_confirmed/_output_failed


@dataclass
class _Pending:
    waiter: Waiter
    out: m.Outgoing
    returned: str | None = None


class Publisher:
    """Publishes on one channel; each waiter learns from the broker's confirm how it went."""

    def __init__(self, channel: Any, *, name: str,
                 schedule: Callable[[float, Callable[[], None]], Any]) -> None:
        self.channel = channel
        self.name = name
        self.schedule = schedule
        # Queues checked in this turn of the I/O loop (see _check_destinations).
        self.checked: set[str] = set()
        self.next_seq = 1
        self.pending: OrderedDict[int, _Pending] = OrderedDict()
        self.closed = False
        self.stats = {"published": 0, "returned": 0, "nacked": 0, "unpublishable": 0}

    def publish(self, out: m.Outgoing, waiter: Waiter) -> None:
        """Publish one message (mandatory, confirmed); the waiter learns how it went."""
        problem = self._send(out, waiter)
        if problem is not None:
            self._fail(waiter, problem)

    def _send(self, out: m.Outgoing, waiter: Waiter) -> Exception | None:
        """Hand a message to pika; number it only once its frames are built."""
        ch = self.channel
        if self.closed or ch is None or not ch.is_open:
            return BrokerUnavailable("channel is not open")
        try:
            self._check_destinations(ch, out)
        except Exception as exc:  # the channel is going: not the message's fault
            return BrokerUnavailable(f"cannot check the queues of {out.routing_key!r}: {exc}")
        try:
            ch.basic_publish(out.exchange, out.routing_key, out.body, out.properties,
                             mandatory=True)
        except Exception as exc:  # pika failed to build the frames: the broker saw nothing
            self.stats["unpublishable"] += 1
            log.warning("%s: cannot publish to %r/%r: %s: %s", self.name, out.exchange[:100],
                        out.routing_key[:100], exc.__class__.__name__, str(exc)[:200])
            return Unpublishable(f"{exc.__class__.__name__}: {str(exc)[:200]}")
        self.pending[self.next_seq] = _Pending(waiter, out)
        self.next_seq += 1
        self.stats["published"] += 1
        return None

    def _check_destinations(self, ch: Any, out: m.Outgoing) -> None:
        """Check each queue the message is meant for, once per turn of the I/O loop."""
        # Once per turn, not per message: what one turn publishes leaves in one write right
        # behind the check. A check per message cost about a quarter of the drain rate (two
        # extra methods per outcome for the broker), and it does not close the window
        # either: a queue being deleted while the broker routes takes (and confirms) what
        # it is handed, so a deletion can land behind any check, per message or per turn.
        for queue in out.destinations:
            if queue in self.checked:
                continue
            pika_compat.check_queue(ch, queue)
            if not self.checked:
                self.schedule(0, self.checked.clear)
            self.checked.add(queue)

    def on_return(self, _channel: Any, method: Any, _props: Any, body: bytes) -> None:
        """The broker could not route a mandatory message: mark its publish as failed."""
        self.stats["returned"] += 1
        why = f"unroutable: {method.reply_code} {method.reply_text} " \
              f"(exchange {method.exchange!r}, key {method.routing_key!r})"
        for pending in self.pending.values():
            out = pending.out
            if pending.returned is None and out.exchange == method.exchange \
                    and out.routing_key == method.routing_key and out.body == body:
                pending.returned = why
                return
        log.warning("%s: a returned message matched no pending publish: %s", self.name, why)

    def on_confirm(self, frame: Any) -> None:
        """Settle the publishes a broker ack or nack covers (it is usually `multiple`)."""
        method = frame.method
        ok = isinstance(method, Basic.Ack)
        tag = method.delivery_tag
        if method.multiple:
            seqs = []
            for seq in self.pending:
                if seq > tag:
                    break
                seqs.append(seq)
        else:
            seqs = [tag]
        for seq in seqs:
            pending = self.pending.pop(seq, None)
            if pending is None:
                continue
            if not ok:
                self.stats["nacked"] += 1
                self._fail(pending.waiter, BrokerUnavailable("the broker refused the message"))
            elif pending.returned is not None:
                self._fail(pending.waiter, Unroutable(pending.returned))
            else:
                self._succeed(pending.waiter)

    def fail_pending(self, exc: Exception) -> None:
        """The channel is gone: fail every waiting publisher."""
        self.closed = True
        pending, self.pending = self.pending, OrderedDict()
        for p in pending.values():
            if isinstance(p.waiter, Future) and not p.waiter.done():
                p.waiter.set_exception(exc)

    def _succeed(self, waiter: Waiter) -> None:
        if isinstance(waiter, Future):
            if not waiter.done():
                waiter.set_result(True)
            return
        self._output_confirmed(waiter)

    def _fail(self, waiter: Waiter, exc: Exception) -> None:
        if isinstance(waiter, Future):
            if not waiter.done():
                waiter.set_exception(exc)
            return
        self._output_failed(waiter, exc)

    def _output_confirmed(self, waiter: Waiter) -> None:
        raise NotImplementedError("a Publisher's waiters are Futures")

    def _output_failed(self, waiter: Waiter, exc: Exception) -> None:
        raise NotImplementedError("a Publisher's waiters are Futures")
