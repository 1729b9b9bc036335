"""The topology's declarations as a chain of pika steps on one channel.

Each step names what it declares, so that a broker refusal (PRECONDITION_FAILED when
another client declared a queue with other arguments) can say exactly what conflicted.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from lab_services.topology import Topology

Step = tuple[str, Callable[[Callable], None]]


def declaration_steps(ch: Any, topology: Topology, prefetch: int) -> list[Step]:
    """Every exchange, queue (each followed by its bindings) and the prefetch, as steps."""
    steps: list[Step] = []
    for ex in topology.exchanges:
        steps.append((f"exchange {ex.name!r} (type {ex.type})",
                      lambda cb, ex=ex: ch.exchange_declare(
            exchange=ex.name, exchange_type=ex.type, durable=ex.durable, callback=cb)))
    for q in topology.queues:
        steps.append((f"queue {q.name!r} with arguments {json.dumps(q.arguments)}",
                      lambda cb, q=q: ch.queue_declare(
            queue=q.name, durable=q.durable, arguments=dict(q.arguments), callback=cb)))
        # Each queue's bindings right after it: a queue declared again (it was deleted)
        # stands unbound for as short a time as the declarations allow.
        for b in topology.bindings_of(q.name):
            steps.append((f"binding {b.exchange!r} -> {b.queue!r} ({b.routing_key})",
                          lambda cb, b=b: ch.queue_bind(
                queue=b.queue, exchange=b.exchange, routing_key=b.routing_key,
                callback=cb)))
    steps.append(("prefetch", lambda cb: ch.basic_qos(prefetch_count=prefetch, callback=cb)))
    return steps


def run_chain(steps: list[Step], done: Callable[[], None],
              started: Callable[[str | None], None]) -> None:
    """Run the steps one after another (each on the previous one's answer), then `done`.

    `started` is told which declaration awaits the broker's answer (None once all did).
    """
    if not steps:
        started(None)
        done()
        return
    (what, first), rest = steps[0], steps[1:]
    started(what)
    first(lambda _frame: run_chain(rest, done, started))
