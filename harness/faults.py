"""Inject faults into a running lab, and record each one on the run's timeline."""

from __future__ import annotations

import itertools
from typing import Any

import pika.exceptions

from harness import amqp
from harness.chaos.messages import TAUGHT, malformed_message
from harness.observe import Timeline
from harness.waiting import WaitTimeout, wait_until
from lab_services import topology as topo

# How long a stopped service's consumers may stay on the broker's books (a replica or another
# service may consume the same queue: then the stop goes on after this).
STOP_SETTLE_S = 5.0

# The kinds of malformed message the lab teaches, and a body for each: a view of the one
# catalogue (harness.chaos.messages), not a second one.
MALFORMED: dict[str, bytes] = {kind: malformed_message(kind, 0)[0] for kind in TAUGHT}


class Faults:
    """Fault injection on a lab and its broker; every call lands on the timeline."""

    def __init__(self, lab: Any, broker: Any, timeline: Timeline) -> None:
        self.lab, self.broker, self.timeline = lab, broker, timeline
        # GET /reservations rows taken before each stop, kill or restart: what the ledger
        # held then must still be there at the end (harness.invariants' ledger_forgot).
        self.ledger_snapshots: list[list[dict[str, Any]]] = []
        self._tags = itertools.count(1)  # each malformed message's tag number

    def snapshot_ledger(self) -> None:
        """Keep the inventory's ledger as it is now, if it can be read (else nothing)."""
        svc = self.lab.services.get("inventory")
        if svc is None or not svc.running:
            return
        try:
            rows = self.lab.reservations().get("reservations")
        except Exception:  # a missing endpoint or a dying service: no snapshot, no verdict
            return
        if isinstance(rows, list):
            self.ledger_snapshots.append(rows)

    # ---- services -----------------------------------------------------------------------

    def stop_service(self, name: str) -> None:
        """Stop a service gracefully (SIGTERM), until the broker has dropped its consumers."""
        self.snapshot_ledger()
        self.timeline.record("stop", name, "SIGTERM")
        self.lab.stop(name)
        self._until_unconsumed(name)

    def _until_unconsumed(self, name: str) -> None:
        """Wait (bounded) until the broker counts no consumer on the queues `name` consumes.

        The broker learns that a connection closed a moment after its process is gone, and
        until then it still delivers to its consumers: to an auto-ack consumer, into the
        void. Orders placed right after a stop (to wait in the queue) were lost that way
        under load, and kill-9 timed out waiting for its backlog.
        """
        queues = topo.queues_of(name)

        def dropped() -> bool:
            try:
                return not any(amqp.consumers(self.lab.amqp_url, q) for q in queues)
            except (pika.exceptions.AMQPError, OSError):
                return True  # the broker is away: it delivers nowhere, and counts nothing
        try:
            wait_until(dropped, STOP_SETTLE_S, f"the broker to drop {name}'s consumers",
                       interval=0.02, max_interval=0.2)
        except WaitTimeout:
            self.timeline.record("note", name, f"the broker still counted a consumer "
                                 f"{STOP_SETTLE_S:g} s after the stop")

    def kill_service(self, name: str) -> None:
        """Kill a service (SIGKILL), as a crash would."""
        self.snapshot_ledger()
        self.timeline.record("kill", name, "SIGKILL")
        self.lab.kill(name)

    def start_service(self, name: str, env: dict[str, str] | None = None) -> None:
        """Start a stopped service and wait until it is healthy."""
        self.timeline.record("start", name, " ".join(f"{k}={v}" for k, v in (env or {}).items()))
        self.lab.start_service(name, env)

    def restart_service(self, name: str, env: dict[str, str] | None = None) -> None:
        """Restart a service (SIGTERM, then start) and wait until it is healthy."""
        self.snapshot_ledger()
        self.timeline.record("restart", name, "SIGTERM + start")
        self.lab.restart(name, env)

    def crashed(self, name: str, point: str, order_id: str) -> None:
        """Note that a service exited at a crash point."""
        self.timeline.record("crash", name, f"{point} for {order_id}")

    # ---- the broker ---------------------------------------------------------------------

    def stop_broker(self) -> None:
        """Stop the broker gracefully."""
        self.snapshot_ledger()
        self.timeline.record("stop", "broker", "graceful")
        self.broker.stop()

    def kill_broker(self) -> None:
        """Kill the broker hard (SIGKILL to its process group / container kill)."""
        self.snapshot_ledger()
        self.timeline.record("kill", "broker", "SIGKILL")
        self.broker.kill()

    def start_broker(self) -> None:
        """Start the broker again on the same data and wait until it takes connections."""
        self.timeline.record("start", "broker", "same data dir")
        self.broker.restart()

    # ---- messages -----------------------------------------------------------------------

    def duplicate_order(self, event: dict[str, Any], *, same_event_id: bool) -> None:
        """Publish an OrderPlaced again: as a redelivery would, or as a hand-made republish."""
        how = "same event_id" if same_event_id else "new event_id"
        self.timeline.record("inject duplicate", event["order_id"], how)
        amqp.republish_order(self.lab.amqp_url, event, same_event_id=same_event_id)

    def malformed(self, kind: str) -> None:
        """Publish one malformed message of a catalogue kind to order_events, tagged."""
        body, props = malformed_message(kind, next(self._tags))
        self.timeline.record("inject malformed", kind, f"{len(body)} bytes")
        amqp.publish_raw(self.lab.amqp_url, body, properties=props)
