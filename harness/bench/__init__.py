"""Speed, measured and never asserted: `python -m harness bench` (run) sets the lab against a
plain-pika drain floor (floor), HTTP intake with wrk (intake), the naive design (versus); plus
the crash bench of notebook 03 (crash) and competing-consumer tools (consumers)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from harness import amqp
from harness.brokers import management as admin
from harness.lab import with_vhost
from lab_services import topology as topo


@contextmanager
def topology_vhost(broker: Any, prefix: str) -> Iterator[str]:
    """A vhost of its own with the lab's topology (classic queues); yields its AMQP URL and
    deletes the vhost afterwards."""
    vhost = f"{prefix}-{uuid.uuid4().hex[:8]}"
    admin.create_vhost(broker, vhost)
    try:
        url = with_vhost(broker.amqp_url, vhost)
        with amqp.channel(url) as ch:
            topo.build_topology("classic").declare(ch)
        yield url
    finally:
        admin.delete_vhost(broker, vhost)
