"""Carry out a chaos schedule: one thread runs its rows at their times, another publishes
the duplicate storm and the malformed flood, so that a blocked or restarting broker never
holds up the schedule."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from typing import Any

import requests

from harness import amqp
from harness.brokers import management as admin
from harness.chaos.messages import (
    VIA_MANAGEMENT,
    malformed_message,
    management_properties,
    poison_message,
)
from harness.chaos.schedule import (
    CRASH,
    FLOOD,
    KILL,
    MEMORY_ALARM,
    MEMORY_CLEAR,
    NORMAL_WATERMARK,
    POISON,
    START,
    STORM,
    Fault,
    flood_messages,
)
from harness.runner import Run, order_event
from harness.waiting import wait_until
from lab_services import topology as topo
from lab_services.crashpoints import CRASH_EXIT_CODE

log = logging.getLogger(__name__)


class Injector:
    """A thread that publishes the duplicate storm and the malformed flood on its own
    connection, so that a blocked or restarting broker never holds up the fault schedule."""

    def __init__(self, amqp_url: str, timeline: Any, broker: Any, vhost: str | None) -> None:
        self.timeline, self.broker, self.vhost = timeline, broker, vhost or "/"
        self.publisher = amqp.Publisher(amqp_url, retry_for=60.0)
        self.jobs: queue.Queue[tuple[str, Any] | None] = queue.Queue()
        self.storm_until = -1.0
        self.sent: Counter[str] = Counter()
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._run, name="chaos-injector", daemon=True)

    def start(self) -> Injector:
        """Start publishing jobs as they come."""
        self._thread.start()
        return self

    def on_accepted(self, order: dict[str, Any]) -> None:
        """Client callback: during a storm, an accepted order is duplicated twice."""
        if self.timeline.now() < self.storm_until:
            self.jobs.put(("duplicate", order))

    def flood(self, messages: list[tuple[int, str]]) -> None:
        """Queue malformed messages (tag number, kind) for publishing."""
        for n, kind in messages:
            self.jobs.put(("malformed", (n, kind)))

    def poison(self, kind: str, order_id: str) -> None:
        """Queue one poison order for publishing."""
        self.jobs.put(("poison", (kind, order_id)))

    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            what, arg = job
            try:
                if what == "poison":
                    self.publisher.publish(*poison_message(*arg))
                    self.sent["poison"] += 1
                elif what == "duplicate":
                    event = order_event(arg)
                    for same in (True, False):
                        self.publisher.publish(*amqp.order_copy(event, same_event_id=same))
                    self.sent["duplicates"] += 2
                else:
                    n, kind = arg
                    body, props = malformed_message(kind, n)
                    if kind in VIA_MANAGEMENT:
                        self._publish_http(kind, n, body, props)
                    else:
                        self.publisher.publish(body, props)
                    self.sent["malformed"] += 1
                    self.sent[f"malformed:{kind}"] += 1
            except Exception as exc:  # noted and reported: a fault not injected is a finding
                self.errors.append(f"{what}: {exc!r}"[:300])
                log.warning("injector: %s failed: %s", what, exc)
        self.publisher.close()

    def _publish_http(self, kind: str, n: int, body: bytes, props: Any) -> None:
        def routed() -> bool:
            try:
                return admin.publish(self.broker, self.vhost, topo.ORDER_EVENTS,
                                     topo.KEY_ORDER_PLACED, body, management_properties(props))
            except requests.RequestException as exc:  # the broker may be restarting
                log.debug("management publish failed: %s", exc)
                return False
        wait_until(routed, 60, f"{kind} message {n} routed through the management API")

    def finish(self, timeout: float) -> None:
        """Publish what is queued, then stop (bounded)."""
        self.jobs.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.errors.append(f"injector still busy after {timeout:.0f}s")


class FaultRunner:
    """A thread that executes the schedule's rows at their planned times, in order.

    A row that blocks (a broker restart) delays the rows after it; the timeline records
    when each one really happened, and that is what the charts mark.
    """

    def __init__(self, run: Run, schedule: list[Fault], injector: Injector) -> None:
        self.run, self.schedule, self.injector = run, schedule, injector
        self.errors: list[str] = []
        self.broker_down = False
        self.alarm_raised = False
        self.done = threading.Event()
        self.started_at = 0.0
        self._thread = threading.Thread(target=self._run, name="chaos-faults", daemon=True)
        # A crash poison (the lab's, white-box) kills the inventory at each delivery: started
        # again at once, as a process supervisor would, until the delivery limit ends it.
        self.supervise = any(f.action == POISON and f.params.get("kind") == CRASH
                             for f in schedule)
        self.crash_restarts = 0
        self._services_lock = threading.Lock()
        self._supervising = threading.Event()
        self._supervisor = threading.Thread(target=self._restart_crashed,
                                            name="chaos-supervisor", daemon=True)

    def start(self) -> FaultRunner:
        """Start the schedule's clock now (and the supervisor, for a crash poison)."""
        self.started_at = self.run.timeline.now()
        self._thread.start()
        if self.supervise:
            self._supervising.set()
            self._supervisor.start()
        return self

    def stop_supervising(self) -> None:
        """Stop restarting services that crashed on the poison (after the run settled)."""
        if self._supervising.is_set():
            self._supervising.clear()
            self._supervisor.join(10)

    def _restart_crashed(self) -> None:
        while self._supervising.is_set():
            for name, svc in self.run.lab.services.items():
                with self._services_lock:
                    if not svc.running and svc.exit_code == CRASH_EXIT_CODE:
                        self.run.timeline.record("crash", name, "exited on the poison order; "
                                                 "started again")
                        self.crash_restarts += 1
                        svc.start()
            time.sleep(0.2)

    def join(self, timeout: float) -> None:
        """Wait (bounded) until every row was executed."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.errors.append(f"fault schedule still running after {timeout:.0f}s")

    def restore(self) -> None:
        """Leave the broker as found, whatever happened: running, with its normal watermark.

        The broker may be shared (a test session's): a run that stopped half-way must not
        leave it down or blocking every publisher.
        """
        if self.broker_down:
            self.run.faults.start_broker()
            self.broker_down = False
        if self.alarm_raised:
            self.run.broker.rabbitmqctl("set_vm_memory_high_watermark", str(NORMAL_WATERMARK))
            self.alarm_raised = False

    def _run(self) -> None:
        try:
            for fault in self.schedule:
                delay = self.started_at + fault.at_s - self.run.timeline.now()
                if delay > 0:
                    time.sleep(delay)
                try:
                    self.execute(fault)
                except Exception as exc:
                    self.errors.append(f"{fault.action} {fault.target} at {fault.at_s}s: {exc!r}"
                                       [:300])
                    self.run.timeline.record("fault failed", fault.target, repr(exc)[:120])
        finally:
            self.done.set()

    def execute(self, fault: Fault) -> None:
        """Do one row of the schedule."""
        run, timeline = self.run, self.run.timeline
        if fault.action == KILL and fault.target == "broker":
            self.broker_down = True
            run.faults.kill_broker()
        elif fault.action == START and fault.target == "broker":
            run.faults.start_broker()
            self.broker_down = False
            timeline.record("ready", "broker", "takes connections again")
        elif fault.action == KILL:
            with self._services_lock:
                run.faults.kill_service(fault.target)
        elif fault.action == START:
            # No wait for health: clients and the other faults go on while it boots.
            with self._services_lock:
                timeline.record("start", fault.target, "after kill -9")
                run.lab.services[fault.target].start()
        elif fault.action in (MEMORY_ALARM, MEMORY_CLEAR):
            watermark = str(fault.params["watermark"])
            self.alarm_raised = fault.action == MEMORY_ALARM
            # rabbitmqctl boots an Erlang VM (seconds on a busy machine): the alarm starts,
            # or ends, when the command returns, so that is when the timeline notes it.
            run.broker.rabbitmqctl("set_vm_memory_high_watermark", watermark)
            timeline.record(fault.action, "broker", f"vm_memory_high_watermark {watermark}")
        elif fault.action == STORM:
            timeline.record("inject duplicate storm", fault.target,
                            f"{fault.params['duration_s']}s, 2 copies per order")
            self.injector.storm_until = timeline.now() + fault.params["duration_s"]
        elif fault.action == POISON:
            timeline.record("inject poison order", fault.params["order_id"],
                            fault.params["kind"])
            self.injector.poison(fault.params["kind"], fault.params["order_id"])
        elif fault.action == FLOOD:
            timeline.record("inject malformed flood", fault.target,
                            f"{fault.params['count']} messages")
            self.injector.flood(flood_messages([fault]))
        else:
            raise ValueError(f"unknown action {fault.action!r}")
