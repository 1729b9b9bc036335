"""Plain-pika tools for competing-consumer experiments: a gate that holds a backlog, live
consumer counts, order inversions, and a small pool of consumers that records who did what.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Sequence
from typing import Any

import pika

from harness.waiting import wait_until


def _order_id(body: bytes) -> str:
    try:
        return str(json.loads(body)["order_id"])
    except (ValueError, KeyError, TypeError):
        return ""


def consumer_count(amqp_url: str, queue: str) -> int:
    """Consumers on a queue right now (a passive declare: exact, unlike the management API's
    statistics, which lag by their emission interval)."""
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        return conn.channel().queue_declare(queue, passive=True).method.consumer_count
    finally:
        if conn.is_open:
            conn.close()


class Gate:
    """Holds every message of a queue unacknowledged, then lets them all go at once.

    Consumers started one after another would not start together: the first one up would
    drain a small backlog alone. The gate takes the whole backlog (prefetch unlimited, no
    ack); when it closes its channel the broker requeues every message, in its original
    position, and the consumers waiting by then compete for it from the same instant.
    The order in which the gate received the messages is the queue's order.
    """

    def __init__(self, amqp_url: str, queue: str) -> None:
        self.queue = queue
        self._conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
        self._channel = self._conn.channel()
        self.order: list[str] = []  # order ids in queue order

    def take(self, n: int, timeout: float) -> list[str]:
        """Receive (without acking) n messages; return their order ids in queue order."""
        deadline = time.monotonic() + timeout
        for method, _props, body in self._channel.consume(self.queue, inactivity_timeout=0.2):
            if method is not None:
                self.order.append(_order_id(body))
            if len(self.order) >= n:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the gate got {len(self.order)} of {n} messages "
                                   f"from {self.queue} in {timeout:.0f}s")
        return list(self.order)

    def release(self) -> None:
        """Close the connection: the broker requeues everything the gate held (idempotent)."""
        if self._conn.is_open:
            self._conn.close()

    def __enter__(self) -> Gate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def wait_consumers(amqp_url: str, queue: str, n: int, timeout: float) -> int:
    """Wait (bounded) until a queue has at least n consumers; return how many."""
    def enough() -> tuple[int] | None:
        k = consumer_count(amqp_url, queue)
        return (k,) if k >= n else None
    return wait_until(enough, timeout, f"{n} consumers on {queue}")[0]


def inversions(values: Sequence[Any]) -> int:
    """Pairs i < j with values[i] > values[j] (strictly), counted by merge sort in n log n."""
    def sort(xs: list[Any]) -> tuple[list[Any], int]:
        if len(xs) < 2:
            return xs, 0
        mid = len(xs) // 2
        left, a = sort(xs[:mid])
        right, b = sort(xs[mid:])
        merged, count, i, j = [], a + b, 0, 0
        while i < len(left) and j < len(right):
            if right[j] < left[i]:
                merged.append(right[j])
                count += len(left) - i  # right[j] is smaller than everything left in `left`
                j += 1
            else:
                merged.append(left[i])
                i += 1
        merged += left[i:] + right[j:]
        return merged, count
    return sort(list(values))[1]


def consume_all(amqp_url: str, queue: str, *, consumers: int, prefetch: int, work_ms: float,
                expected: int, timeout: float, start_together: bool = True,
                seed: int = 0) -> list[tuple[str, int]]:
    """Run `consumers` plain pika consumers on a queue until `expected` messages are done.

    Each consumer works 0.5-1.5 x `work_ms` per message (seeded; real work varies), then
    notes (order id, consumer number) in one shared list, then acks: the list is the order
    in which the work was finished. With `start_together`, a Gate holds the queue until
    every consumer is subscribed (else the first one up could take a small queue alone).
    """
    done: list[tuple[str, int]] = []
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []

    def work(k: int) -> None:
        rng = random.Random(seed * 1000 + k)
        try:
            conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
            ch = conn.channel()
            ch.basic_qos(prefetch_count=prefetch)
            for method, _props, body in ch.consume(queue, inactivity_timeout=0.1):
                if stop.is_set():
                    break
                if method is None:
                    continue
                time.sleep(work_ms * rng.uniform(0.5, 1.5) / 1000)
                with lock:
                    done.append((_order_id(body), k))
                    if len(done) >= expected:
                        stop.set()
                ch.basic_ack(method.delivery_tag)
            conn.close()
        except BaseException as exc:  # reported by the caller, not lost in a thread
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(consumers)]
    gate = Gate(amqp_url, queue) if start_together else None
    try:
        if gate is not None:
            gate.take(expected, timeout=30)
        for t in threads:
            t.start()
        if gate is not None:
            wait_consumers(amqp_url, queue, consumers + 1, 30)
    finally:
        if gate is not None:
            gate.release()
    stop.wait(timeout)
    stop.set()
    for t in threads:
        t.join(10)
    if errors:
        raise errors[0]
    if len(done) < expected:
        raise TimeoutError(f"{len(done)} of {expected} messages consumed from {queue} "
                           f"in {timeout:.0f}s")
    return done
