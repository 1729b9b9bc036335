"""Every place the lab reaches into pika's internals, in one module, checked against pika's version.

pika is the lab's AMQP client, and three of its behaviours cost the services too much:

1. Frame decoding raises on header values other clients may legally send (a timestamp past
   year 9999, tables nested about 900 deep). It raises inside the connection's frame
   decoder, so pika drops the *connection*, and the broker hands the same message back
   first on every reconnect: one message stops a consumer for good. `install()` wraps
   `pika.data.decode_value` so those values decode (as an integer, or a placeholder).
2. A SelectConnection writes every frame with its own `send` call: a publish is three
   frames and an ack one more. Draining a backlog, those system calls took 40 % of the
   consumer's time. `CoalescingConnection` keeps a loop turn's frames and writes them once.
3. A no-wait declaration (`queue.declare`, `queue.bind` without a reply) goes through
   pika's RPC path, which holds it back while an earlier synchronous call on the channel
   waits for its reply, whereas a publish is written at once: a declaration meant to come
   before a publish could reach the broker after it. `check_queue` and `declare_queue` write
   theirs at once, in order with the publishes (`Channel._send_method`).

All three touch private names of pika 1.x (`pika.data.decode_value`,
`BaseConnection._output_marshaled_frames`, `_adapter_emit_data`, `Channel._send_method`).
They were written against pika 1.3 and 1.4 (pyproject pins `pika>=1.3,<2`). Under another
major version, or if the names are gone, nothing is patched: pika then decodes strictly,
writes frame by frame and sends no-wait declarations through its public calls (in order,
except while a synchronous call on the channel waits for its reply), which is slower and
less tolerant, but otherwise correct; a warning says so once.
"""

from __future__ import annotations

import logging
import struct
import threading
from typing import Any

import pika
import pika.channel
import pika.data
from pika import spec

from lab_services.headers import MAX_DECODE_DEPTH

log = logging.getLogger(__name__)

TESTED_MAJOR = 1


def _version() -> tuple[int, ...]:
    parts = []
    for piece in str(getattr(pika, "__version__", "0")).split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def _internals_present() -> bool:
    return (hasattr(pika.data, "decode_value")
            and hasattr(pika.SelectConnection, "_output_marshaled_frames")
            and hasattr(pika.SelectConnection, "_adapter_emit_data"))


PATCHABLE = _version()[:1] == (TESTED_MAJOR,) and _internals_present()
if not PATCHABLE:
    log.warning("pika %s is not the 1.x these patches were written for: decoding foreign "
                "headers strictly and writing frame by frame", getattr(pika, "__version__", "?"))


# ---- 1. tolerant header decoding -------------------------------------------------------------

# pika's own strict decoder (tests put it back to show what the patch prevents).
pika_decode_value = pika.data.decode_value
_decode_depth = threading.local()


def _tolerant_decode_value(encoded: bytes, offset: int) -> tuple[Any, int]:
    """pika's decode_value, hardened against two header values that other clients can send.

    - A `T` timestamp past year 9999 decodes as its integer.
    - A table or array nested more than MAX_DECODE_DEPTH deep is skipped by its length
      (pika's decoder recurses and hit RecursionError at about 900 levels).
    """
    kind = encoded[offset:offset + 1]
    depth = getattr(_decode_depth, "n", 0)
    if kind in (b"F", b"A") and depth >= MAX_DECODE_DEPTH:
        length = struct.unpack_from(">I", encoded, offset + 1)[0]
        return "[nested too deep]", offset + 5 + length
    _decode_depth.n = depth + 1
    try:
        return pika_decode_value(encoded, offset)
    except (ValueError, OverflowError, OSError):
        if kind != b"T":
            raise
        return struct.unpack_from(">Q", encoded, offset + 1)[0], offset + 9
    finally:
        _decode_depth.n = depth


def install() -> None:
    """Make pika decode out-of-range header values instead of dropping the connection."""
    if PATCHABLE:
        pika.data.decode_value = _tolerant_decode_value


# ---- 2. one socket write per loop turn ----------------------------------------------------


class CoalescingConnection(pika.SelectConnection):
    """A SelectConnection that sends the frames of one I/O-loop turn in one socket write.

    Frames are kept in order and flushed at the end of the loop turn that produced them.
    Where pika's internals are not the expected ones, it is a plain SelectConnection.
    """

    if PATCHABLE:
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


# ---- 3. no-wait declarations in order with publishes ----------------------------------------


SENDS_IN_ORDER = PATCHABLE and hasattr(pika.channel.Channel, "_send_method")


def _send_now(channel: Any, method: Any) -> bool:
    """Write a method frame at once on a pika Channel; False where that is not possible."""
    if SENDS_IN_ORDER and isinstance(channel, pika.channel.Channel):
        channel._send_method(method)
        return True
    return False


def check_queue(channel: Any, queue: str) -> None:
    """Ask, without waiting, that a queue exist (else the broker closes the channel)."""
    # A passive no-wait declare: a missing queue closes the channel (404 NOT_FOUND) before
    # the broker handles anything sent after it, such as the publish it guards.
    if not _send_now(channel, spec.Queue.Declare(queue=queue, passive=True, nowait=True)):
        channel.queue_declare(queue, passive=True)  # no callback: no-wait


def declare_queue(channel: Any, queue: str, *, durable: bool, arguments: dict[str, Any],
                  bindings: list[tuple[str, str]]) -> None:
    """Declare a queue and its bindings (exchange, routing key) in one write, no-wait."""
    # In one write, not request by request: the queue never stands unbound for a round trip.
    frames = [spec.Queue.Declare(queue=queue, durable=durable, nowait=True,
                                 arguments=dict(arguments))]
    frames += [spec.Queue.Bind(queue=queue, exchange=exchange, routing_key=key, nowait=True)
               for exchange, key in bindings]
    for method in frames:
        if _send_now(channel, method):
            continue
        if isinstance(method, spec.Queue.Declare):
            channel.queue_declare(queue, durable=durable, arguments=dict(arguments))
        else:
            channel.queue_bind(queue, method.exchange, routing_key=method.routing_key)
