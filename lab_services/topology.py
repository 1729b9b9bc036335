"""The one definition of the lab's exchanges, queues, bindings, dead-lettering and retries.

The services declare it on every (re)connect, the harness reads queue names from it, and
`python -m lab_services.topology definitions` renders it as a RabbitMQ definitions file for
docker-compose. Nothing else in the project spells a queue argument.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from lab_services.contract import QUEUE_TYPES

ORDER_EVENTS = "order_events"
INVENTORY_EVENTS = "inventory_events"
DEAD_LETTERS = "dead_letters"

QUEUE_ORDER_PLACED = "order_placed"
QUEUE_INVENTORY_RESERVED = "inventory_reserved"
QUEUE_INVENTORY_FAILED = "inventory_failed"
QUEUE_ORDER_STATUS = "order_status"
DLQ = "dlq"

KEY_ORDER_PLACED = "order.placed"
KEY_INVENTORY_RESERVED = "inventory.reserved"
KEY_INVENTORY_FAILED = "inventory.failed"

# Which service consumes each work queue (a retry tier belongs to the queue it feeds); the
# DLQ is nobody's. A queue added without an owner is the DLQ's kind: read, never drained.
QUEUE_OWNERS = {QUEUE_ORDER_PLACED: "inventory", QUEUE_INVENTORY_RESERVED: "notification",
                QUEUE_INVENTORY_FAILED: "notification", QUEUE_ORDER_STATUS: "order"}
# Queues an implementation may leave unconsumed (the contract calls them optional).
OPTIONAL_QUEUES = frozenset({QUEUE_ORDER_STATUS})

# Retry tiers for a handler failure that persists: attempt n waits RETRY_DELAYS_MS[n-1] in
# its own queue (one TTL per queue, so no message waits behind a longer one), then the
# broker dead-letters it back to the work queue. After the last tier it goes to `dlq`.
RETRY_DELAYS_MS = (200, 800, 3200)
# Every consumed queue has its tiers: a transient error must not send a good message
# straight to the DLQ.
RETRIED_QUEUES = (QUEUE_ORDER_PLACED, QUEUE_INVENTORY_RESERVED, QUEUE_INVENTORY_FAILED,
                  QUEUE_ORDER_STATUS)
# The broker's own redelivery limit on quorum work queues: a backstop above the services'
# DELIVERY_LIMIT (default 5), which is charged only to the message in hand when a consumer
# dies. Before RabbitMQ 4.3 the broker counts every return, so a crash charges each innocent
# order of the crashed consumer's prefetch window too; at 5 a sixth crash in a storm would
# dead-letter valid orders. 20 is RabbitMQ 4.x's default.
QUORUM_DELIVERY_LIMIT = 20


@dataclass(frozen=True)
class Exchange:
    """An exchange the lab declares."""

    name: str
    type: str = "topic"
    durable: bool = True


@dataclass(frozen=True)
class Queue:
    """A queue the lab declares, with the arguments that make it what it is."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    durable: bool = True

    @property
    def owner(self) -> str | None:
        """The service that consumes this queue (None for the DLQ)."""
        return owner_of(self.name)


def queues_of(service: str) -> list[str]:
    """The work queues a service consumes (QUEUE_OWNERS read the other way)."""
    return [q for q, owner in QUEUE_OWNERS.items() if owner == service]


def owner_of(queue: str) -> str | None:
    """The service that consumes a queue (a retry tier: its work queue's), or None."""
    return QUEUE_OWNERS.get(queue.split(".retry.")[0])


@dataclass(frozen=True)
class Binding:
    """A binding of a queue to an exchange under a routing key."""

    exchange: str
    queue: str
    routing_key: str


@dataclass(frozen=True)
class Topology:
    """Exchanges, queues and bindings, in declaration order."""

    queue_type: str
    exchanges: tuple[Exchange, ...]
    queues: tuple[Queue, ...]
    bindings: tuple[Binding, ...]

    def queue_names(self) -> list[str]:
        """Names of every queue, work queues first."""
        return [q.name for q in self.queues]

    def bindings_of(self, queue: str) -> tuple[Binding, ...]:
        """The bindings whose destination is this queue."""
        return tuple(b for b in self.bindings if b.queue == queue)

    def destinations(self, exchange: str, routing_key: str) -> tuple[str, ...]:
        """The queues a message published to this exchange with this key is meant for."""
        kind = next((e.type for e in self.exchanges if e.name == exchange), None)
        found = [b.queue for b in self.bindings if b.exchange == exchange and (
            kind == "fanout" or (kind == "topic" and topic_matches(b.routing_key, routing_key))
            or (kind == "direct" and b.routing_key == routing_key))]
        return tuple(dict.fromkeys(found))  # once each, in binding order

    def declare(self, channel: Any) -> None:
        """Declare everything on a pika BlockingChannel (idempotent when arguments match)."""
        for ex in self.exchanges:
            channel.exchange_declare(exchange=ex.name, exchange_type=ex.type, durable=ex.durable)
        for q in self.queues:
            channel.queue_declare(queue=q.name, durable=q.durable, arguments=dict(q.arguments))
        for b in self.bindings:
            channel.queue_bind(queue=b.queue, exchange=b.exchange, routing_key=b.routing_key)

    def definitions(self, vhost: str = "/") -> dict[str, Any]:
        """The topology as a RabbitMQ definitions document (for load_definitions at boot)."""
        return {
            "vhosts": [{"name": vhost}],
            "exchanges": [
                {
                    "name": ex.name,
                    "vhost": vhost,
                    "type": ex.type,
                    "durable": ex.durable,
                    "auto_delete": False,
                    "internal": False,
                    "arguments": {},
                }
                for ex in self.exchanges
            ],
            "queues": [
                {
                    "name": q.name,
                    "vhost": vhost,
                    "durable": q.durable,
                    "auto_delete": False,
                    "arguments": dict(q.arguments),
                }
                for q in self.queues
            ],
            "bindings": [
                {
                    "source": b.exchange,
                    "vhost": vhost,
                    "destination": b.queue,
                    "destination_type": "queue",
                    "routing_key": b.routing_key,
                    "arguments": {},
                }
                for b in self.bindings
            ],
        }


def topic_matches(pattern: str, routing_key: str) -> bool:
    """Whether a topic binding key matches a routing key (`*` one word, `#` zero or more)."""
    def match(p: list[str], k: list[str]) -> bool:
        if not p:
            return not k
        if p[0] == "#":
            return any(match(p[1:], k[i:]) for i in range(len(k) + 1))
        return bool(k) and p[0] in ("*", k[0]) and match(p[1:], k[1:])
    return match(pattern.split("."), routing_key.split("."))


@functools.cache
def destinations(exchange: str, routing_key: str) -> tuple[str, ...]:
    """The queues the lab's bindings route this exchange and key to (any queue type)."""
    return build_topology("classic").destinations(exchange, routing_key)


def retry_queue(attempt: int, queue: str = QUEUE_ORDER_PLACED) -> str:
    """Name of the delay queue that holds a message of `queue` before retry `attempt`."""
    return f"{queue}.retry.{attempt}"


def build_topology(queue_type: str | None = None) -> Topology:
    """Build the lab topology for a queue type (classic or quorum; env LAB_QUEUE_TYPE)."""
    queue_type = (queue_type or os.environ.get("LAB_QUEUE_TYPE") or "classic").lower()
    if queue_type not in QUEUE_TYPES:
        raise ValueError(f"queue type must be one of {QUEUE_TYPES}, not {queue_type!r}")
    base = {"x-queue-type": queue_type}
    dead_lettered = {**base, "x-dead-letter-exchange": DEAD_LETTERS}
    if queue_type == "quorum":
        # The broker's own poison-message guard; classic queues have none, so the services
        # also count redeliveries themselves (DELIVERY_LIMIT).
        dead_lettered["x-delivery-limit"] = QUORUM_DELIVERY_LIMIT
    exchanges = (
        Exchange(ORDER_EVENTS),
        Exchange(INVENTORY_EVENTS),
        Exchange(DEAD_LETTERS, type="fanout"),
    )
    queues = [
        Queue(QUEUE_ORDER_PLACED, dead_lettered),
        Queue(QUEUE_INVENTORY_RESERVED, dead_lettered),
        Queue(QUEUE_INVENTORY_FAILED, dead_lettered),
        Queue(QUEUE_ORDER_STATUS, dead_lettered),
        Queue(DLQ, base),
    ]
    for work_queue in RETRIED_QUEUES:
        for attempt, delay_ms in enumerate(RETRY_DELAYS_MS, start=1):
            # Expired messages go back through the default exchange to the work queue.
            queues.append(
                Queue(
                    retry_queue(attempt, work_queue),
                    {
                        **base,
                        "x-message-ttl": delay_ms,
                        "x-dead-letter-exchange": "",
                        "x-dead-letter-routing-key": work_queue,
                    },
                )
            )
    bindings = (
        Binding(ORDER_EVENTS, QUEUE_ORDER_PLACED, KEY_ORDER_PLACED),
        Binding(INVENTORY_EVENTS, QUEUE_INVENTORY_RESERVED, KEY_INVENTORY_RESERVED),
        Binding(INVENTORY_EVENTS, QUEUE_INVENTORY_FAILED, KEY_INVENTORY_FAILED),
        Binding(INVENTORY_EVENTS, QUEUE_ORDER_STATUS, "inventory.*"),
        Binding(DEAD_LETTERS, DLQ, "#"),
    )
    return Topology(queue_type, exchanges, tuple(queues), bindings)


def main(argv: list[str] | None = None) -> int:
    """Print the topology, or write it as a definitions file."""
    parser = argparse.ArgumentParser(prog="python -m lab_services.topology")
    sub = parser.add_subparsers(dest="command", required=True)
    defs = sub.add_parser("definitions", help="render a RabbitMQ definitions JSON document")
    defs.add_argument("--queue-type", choices=QUEUE_TYPES, default=None)
    defs.add_argument("--vhost", default="/")
    defs.add_argument("-o", "--output", help="file to write (default: stdout)")
    sub.add_parser("show", help="list exchanges, queues and bindings")
    args = parser.parse_args(argv)
    if args.command == "show":
        topo = build_topology()
        for ex in topo.exchanges:
            print(f"exchange {ex.name} ({ex.type})")
        for q in topo.queues:
            print(f"queue    {q.name} {q.arguments}")
        for b in topo.bindings:
            print(f"binding  {b.exchange} --{b.routing_key}--> {b.queue}")
        return 0
    text = json.dumps(build_topology(args.queue_type).definitions(args.vhost), indent=2) + "\n"
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
