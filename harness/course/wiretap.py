"""A recording TCP proxy in front of a broker: what an AMQP client really said, for a check.

A check that reads a student's code can be fooled; one that reads the wire cannot. The student
connects to `Wiretap.url` (the broker's URL with the proxy's port); every byte goes through
unchanged, and the methods a check cares about are logged in the order the proxy forwarded
them: confirm.select, queue.declare (durable?), basic.publish (with its delivery mode),
basic.get, basic.ack / nack / reject in both directions (from the broker, an ack or nack is a
publisher confirm). A frame from the broker is logged before it is forwarded, so anything the
client sends in answer to it is logged after it.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pika

METHODS = {(85, 10): "confirm.select", (50, 10): "queue.declare", (60, 40): "basic.publish",
           (60, 70): "basic.get", (60, 71): "basic.get-ok", (60, 80): "basic.ack",
           (60, 90): "basic.reject", (60, 120): "basic.nack"}
FRAME_END = 0xCE


@dataclass
class Event:
    """One AMQP method seen on the wire."""

    sender: str  # "client" or "broker"
    connection: int
    channel: int
    method: str
    fields: dict[str, Any] = field(default_factory=dict)


def _shortstr(data: bytes, at: int) -> tuple[str, int]:
    n = data[at]
    return data[at + 1:at + 1 + n].decode(errors="replace"), at + 1 + n


def _fields(method: str, args: bytes) -> dict[str, Any]:
    """The arguments of the methods a check reads."""
    if method == "queue.declare":
        queue, at = _shortstr(args, 2)
        bits = args[at]
        return {"queue": queue, "passive": bool(bits & 1), "durable": bool(bits & 2)}
    if method == "basic.publish":
        exchange, at = _shortstr(args, 2)
        key, at = _shortstr(args, at)
        return {"exchange": exchange, "routing_key": key, "delivery_mode": None}
    if method in ("basic.ack", "basic.nack"):
        tag, bits = struct.unpack_from(">QB", args)
        return {"delivery_tag": tag, "multiple": bool(bits & 1)}
    if method in ("basic.reject", "basic.get-ok"):
        return {"delivery_tag": struct.unpack_from(">Q", args)[0]}
    if method == "basic.get":
        return {"queue": _shortstr(args, 2)[0]}
    return {}


def _delivery_mode(payload: bytes) -> int | None:
    """The delivery mode in a basic content header, None if not set."""
    flags, at = struct.unpack_from(">H", payload, 12)[0], 14
    if flags & 0x8000:  # content-type
        at = _shortstr(payload, at)[1]
    if flags & 0x4000:  # content-encoding
        at = _shortstr(payload, at)[1]
    if flags & 0x2000:  # headers: a table with a 4-byte length
        at += 4 + struct.unpack_from(">I", payload, at)[0]
    return payload[at] if flags & 0x1000 else None


class Wiretap:
    """A proxy on a free local port in front of `amqp_url`'s broker, logging AMQP methods."""

    def __init__(self, amqp_url: str) -> None:
        parts = urlsplit(amqp_url)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 5672)
        self._server = socket.create_server(("127.0.0.1", 0))
        port = self._server.getsockname()[1]
        netloc = parts.netloc.rsplit("@", 1)
        host = f"127.0.0.1:{port}"
        self.url = urlunsplit(parts._replace(
            netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))
        self.events: list[Event] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="wiretap").start()

    def clear(self) -> None:
        """Forget what was logged so far."""
        with self._lock:
            self.events.clear()

    def close(self) -> None:
        """Stop listening (open connections end with their client)."""
        self._closed = True
        self._server.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                broker = socket.create_connection(self._target, timeout=10)
                broker.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self.connections += 1
                number = self.connections
            for src, dst, sender in ((client, broker, "client"), (broker, client, "broker")):
                threading.Thread(target=self._pump, args=(src, dst, sender, number),
                                 daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, sender: str, number: int) -> None:
        buffer = b""
        skip = 8 if sender == "client" else 0  # the client's protocol header "AMQP0091"
        publishes: dict[int, Event] = {}  # channel -> its last publish, awaiting its header
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                buffer += data
                if skip:
                    taken = min(skip, len(buffer))
                    buffer, skip = buffer[taken:], skip - taken
                while len(buffer) >= 7:
                    kind, channel, size = struct.unpack_from(">BHI", buffer)
                    if len(buffer) < size + 8:
                        break
                    payload, buffer = buffer[7:7 + size], buffer[size + 8:]
                    self._frame(kind, channel, payload, sender, number, publishes)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def _frame(self, kind: int, channel: int, payload: bytes, sender: str, number: int,
               publishes: dict[int, Event]) -> None:
        if kind == 2 and channel in publishes:  # the content header of the last publish
            publishes.pop(channel).fields["delivery_mode"] = _delivery_mode(payload)
            return
        if kind != 1:
            return
        method = METHODS.get(struct.unpack_from(">HH", payload))
        if method is None:
            return
        event = Event(sender, number, channel, method, _fields(method, payload[4:]))
        if method == "basic.publish":
            publishes[channel] = event
        with self._lock:
            self.events.append(event)


def replay_faults(events: list[Event]) -> list[str]:
    """What a take-republish-ack loop did wrong on the wire: publishes without confirms or not
    persistent, a taken message acked before it was republished and that republish confirmed,
    or acked without being republished at all."""
    faults: list[str] = []
    confirming: set[tuple[int, int]] = set()
    sent: dict[tuple[int, int], int] = {}  # (connection, channel) -> confirmed publishes so far
    confirmed: dict[tuple[int, int], int] = {}  # -> highest confirmed sequence number
    taken: dict[tuple[int, int, int], int] = {}  # (connection, channel, tag) -> its get-ok
    for at, e in enumerate(events):
        key = (e.connection, e.channel)
        if e.method == "confirm.select" and e.sender == "client":
            confirming.add(key)
        elif e.method == "basic.get-ok":
            taken[(*key, e.fields["delivery_tag"])] = at
        elif e.method == "basic.publish":
            if key not in confirming:
                faults.append("published without confirm_delivery(): the broker never "
                              "confirmed it, so you cannot know it arrived")
            else:
                sent[key] = sent.get(key, 0) + 1
            if e.fields.get("delivery_mode") != 2:
                faults.append("republished without delivery_mode=2: the replayed order is "
                              "transient, a broker restart loses it")
        elif e.method == "basic.ack" and e.sender == "broker":
            confirmed[key] = max(confirmed.get(key, 0), e.fields["delivery_tag"])
        elif e.method == "basic.ack" and e.sender == "client":
            got = taken.get((*key, e.fields["delivery_tag"]), -1)
            if not any(x.method == "basic.publish" for x in events[got + 1:at]):
                later = next((x for x in events[at + 1:]
                              if x.method in ("basic.publish", "basic.get-ok")), None)
                faults.append(
                    "acked a message from the DLQ before republishing it: a crash in between "
                    "loses the order" if later is not None and later.method == "basic.publish"
                    else "acked a message from the DLQ that you did not republish: it is "
                    "gone for good")
            elif any(sent[k] > confirmed.get(k, 0) for k in sent):
                faults.append("acked a message from the DLQ before its republish was "
                              "confirmed: a crash in between loses the order")
    return list(dict.fromkeys(faults))


def snapshot_queue(amqp_url: str, queue: str) -> list[tuple[bytes, Any]]:
    """Every message of a queue (body, properties), left in place: to restore it after a try."""
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        ch, found = conn.channel(), []
        while True:
            method, props, body = ch.basic_get(queue)
            if method is None:
                return found
            found.append((body, props))
    finally:
        conn.close()  # unacked: every message goes back, in order


def restore_queue(amqp_url: str, queue: str, snapshot: list[tuple[bytes, Any]]) -> None:
    """Empty a queue and put a snapshot's messages back (persistent, confirmed)."""
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_purge(queue)
        for body, props in snapshot:
            ch.basic_publish("", queue, body, props)
    finally:
        conn.close()


def confirm_outcomes(events: list[Event]) -> dict[str, int]:
    """Publishes the broker acked, nacked, left unconfirmed (on a confirm channel) and made
    without confirms at all, read on the wire (a confirm may cover several: `multiple`)."""
    confirming: set[tuple[int, int]] = set()
    sent: dict[tuple[int, int], int] = {}  # channel -> publishes in confirm mode so far
    outcome: dict[tuple[int, int, int], str] = {}  # (connection, channel, seq) -> ack/nack
    counts = {"acked": 0, "nacked": 0, "unconfirmed": 0, "without confirms": 0}
    for e in events:
        key = (e.connection, e.channel)
        if e.method == "confirm.select" and e.sender == "client":
            confirming.add(key)
        elif e.method == "basic.publish":
            if key in confirming:
                sent[key] = sent.get(key, 0) + 1
            else:
                counts["without confirms"] += 1
        elif e.method in ("basic.ack", "basic.nack") and e.sender == "broker":
            tag = e.fields["delivery_tag"]
            first = 1 if e.fields["multiple"] else tag
            for seq in range(first, tag + 1):
                outcome.setdefault((*key, seq), e.method[6:] + "ed")
    for key, n in sent.items():
        for seq in range(1, n + 1):
            counts[outcome.get((*key, seq), "unconfirmed")] += 1
    return counts
