"""One scenario run: a broker, a lab on it, a sampler, a fault timeline, a run folder."""

from __future__ import annotations

import json
import logging
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pandas as pd
import pika.exceptions
import requests

from harness import amqp
from harness.faults import Faults
from harness.invariants import Verdict, check_run
from harness.lab import Lab, LabConfig
from harness.lab.client import ContractGap
from harness.lab.impl import Impl, resolve
from harness.load import BackgroundLoad, LoadSpec, place_orders
from harness.observe import QueueSampler, Timeline, latency_frame, percentiles
from harness.reporting.results import keep_logs, run_folder
from harness.run_state import STATE_PATHS, RunState
from harness.waiting import WaitTimeout, wait_until
from lab_services import topology as topo

log = logging.getLogger(__name__)


class QueueMissing(WaitTimeout):
    """A queue the contract names does not exist: waiting on it can never succeed."""


# A submission's consumer thread may declare its queues a moment after its /health answers
# (the original lab's does, and slower on a loaded machine): a queue missing within this
# long of the lab's start is waited for, not yet a contract gap.
DECLARE_GRACE_S = 10.0


# The contract's throughput floor: an implementation must decide and notify at least this
# many orders per second (docs/contract.md). Waits for notifications scale with it, and go
# on past a scenario's own bound while notifications keep coming, at most STALL_S apart.
THROUGHPUT_FLOOR = 5.0
STALL_S = 15.0
# Nothing notified for STALL_S while the broker held nothing on the way to a notification
# for QUIET_S of it (read through the management API, ready and unacked): nothing more
# can come, and the wait ends before the scenario's own bound (docs/contract.md).
QUIET_S = 5.0
GAPS_FILE = "contract_gaps.json"
OBSERVED_FILE = "observed.json"  # optional features seen in use (e.g. status updates)


def order_event(order: dict[str, Any]) -> dict[str, Any]:
    """The OrderPlaced event of an order as the order service published it."""
    return {"event_id": order["event_id"], "event_type": "OrderPlaced",
            "timestamp": order["created_at"], "order_id": order["order_id"],
            "user_id": order["user_id"], "items": order["items"],
            "total_amount": order["total_amount"]}


class Run:
    """A context for one scenario on a started broker: starts a lab, samples
    queue depth, keeps the fault timeline, and leaves a run folder with the service logs."""

    def __init__(self, scenario: str, broker: Any, *, out: str | Path = "runs",
                 lab: LabConfig | None = None, impl: Impl | str | Path | None = None,
                 replicas: dict[str, int] | None = None, sample_interval: float = 0.25,
                 progress: bool = True, **lab_overrides: Any) -> None:
        self.scenario = scenario
        self.run_dir = run_folder(out, scenario)
        self.progress = progress
        self._stack = ExitStack()
        self.broker = broker
        self.lab_config = lab or LabConfig(**lab_overrides)
        self.impl = resolve(impl)
        self.replicas = replicas
        self.sample_interval = sample_interval
        self.timeline = Timeline()
        self.t0 = self.timeline.t0
        self.lab: Lab | None = None
        self.started = self.t0  # when the lab's services were all up (set by __enter__)
        self.sampler: QueueSampler | None = None
        self.faults: Faults | None = None
        # Services found dead when the state was read: name -> (exit code, log tail).
        self.died: dict[str, tuple[int | None, str]] = {}
        # Contract gaps met on the way (missing path, queue or body shape): the grade card
        # lists each once, first, and does not judge the checks that needed it.
        self.gaps: list[ContractGap] = []
        self.observed: dict[str, Any] = {}

    def __enter__(self) -> Run:
        try:
            self.lab = Lab(self.broker, self.lab_config, impl=self.impl, replicas=self.replicas,
                           workdir=self.run_dir / "services")
            self._stack.callback(self._close_lab)
            self.lab.start()
            self.started = time.monotonic()
            self.sampler = QueueSampler(self.broker, lambda: self.lab.amqp_url, self.lab.vhost,
                                        self.t0,
                                        interval=self.sample_interval)
            self._stack.callback(self.sampler.stop)
            self.sampler.start()
            self.faults = Faults(self.lab, self.broker, self.timeline)
            return self
        except BaseException:
            self._stack.close()
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            self._stack.close()
        finally:
            self.write_gaps()

    def gap(self, what: str, detail: str, blocks: tuple[str, ...] = ()) -> None:
        """Note a contract gap once (the same path or queue met again adds nothing)."""
        if not any(g.what == what for g in self.gaps):
            log.warning("contract gap: %s %s", what, detail)
            self.gaps.append(ContractGap(what, detail, blocks))

    def write_gaps(self) -> None:
        """Write the contract gaps met so far into the run folder (the grade card reads them)."""
        for g in (self.lab.gaps if self.lab else []):
            self.gap(g.what, g.detail, g.blocks)
        if self.gaps:
            (self.run_dir / GAPS_FILE).write_text(json.dumps(
                [g.to_dict() for g in self.gaps], indent=2) + "\n")
        if self.observed:
            (self.run_dir / OBSERVED_FILE).write_text(json.dumps(self.observed) + "\n")

    def _close_lab(self) -> None:
        self.lab.close()
        keep_logs(self.run_dir / "services", self.run_dir)

    # ---- driving ---------------------------------------------------------------------------

    def place(self, spec: LoadSpec, stop: threading.Event | None = None) -> pd.DataFrame:
        """Drive load against the order service; rows are times since the run started."""
        spec.progress = spec.progress and self.progress
        load = place_orders(self.lab.url("order"), spec, t0=self.t0, stop=stop)
        self._note_refusals(load)
        return load

    def place_in_background(self, spec: LoadSpec) -> BackgroundLoad:
        """Start placing orders on a thread; `.join()` returns the rows. The run stops it
        when it ends, so a scenario that raised leaves no loader behind."""
        loader = BackgroundLoad(lambda stop: self.place(spec, stop=stop))
        self._stack.callback(loader.stop)
        return loader.start()

    def _note_refusals(self, load: pd.DataFrame) -> None:
        # Every order refused with a 4xx, or answered 2xx without an order_id: the
        # implementation does not take (or answer) the contract's body.
        if load.empty or load["accepted"].any():
            return
        statuses = sorted({str(s) for s in load["status"]})
        if all(s.startswith("4") for s in statuses):
            self.gap("POST /order", f"refused every order in the contract's body shape "
                     f"(statuses {', '.join(statuses)})", ("orders",))
        elif all(s.startswith("2") for s in statuses):
            self.gap("POST /order", f"answered {', '.join(statuses)} without an order_id in "
                     "the body", ("orders",))

    def hold(self, seconds: float) -> None:
        """Let the experiment run for a while (a step of the scenario, not a wait for a result)."""
        time.sleep(seconds)

    def wait_notified(self, order_ids: list[str], timeout: float, *,
                      stall_s: float = STALL_S) -> bool:
        """Wait (bounded) for every order's notification; say whether all arrived.

        Past `timeout` the wait goes on while notifications keep arriving (at most `stall_s`
        apart), up to what the contract's throughput floor allows for these orders: a slow
        but correct implementation is waited for, a stalled one is not. Stops early when a
        service process has died: nothing more will arrive then. Zero orders: at once.
        A caller that saw every order's last message in the broker (nothing of them kept
        outside it, in an outbox) may pass a `stall_s` as short as QUIET_S.
        """
        wanted = set(order_ids)
        if not wanted:  # zero accepted orders is an answer, not something to wait for
            return True
        start = time.monotonic()
        cap = max(timeout, timeout + len(wanted) / THROUGHPUT_FLOOR)
        progress: dict[str, Any] = {"n": -1, "at": start, "quiet_since": None}

        def done() -> str | None:
            if any(not s.running for s in self.lab.services.values()):
                return "a service died"
            now = time.monotonic()
            n = len(wanted & {n["order_id"] for n in self.lab.notifications()})
            if n == len(wanted):
                return "all notified"
            if n > progress["n"]:
                progress.update(n=n, at=now, quiet_since=None)
            idle = now - progress["at"]
            if now - start > timeout and idle > stall_s:
                return f"stalled at {n} of {len(wanted)}"
            if idle > stall_s - QUIET_S:
                held = self._broker_holds()
                if held != 0:
                    progress["quiet_since"] = None
                elif progress["quiet_since"] is None:
                    progress["quiet_since"] = now
                if (idle > stall_s and progress["quiet_since"] is not None
                        and now - progress["quiet_since"] >= QUIET_S):
                    return f"stalled at {n} of {len(wanted)}, the broker holding nothing more"
            return None

        try:
            why = wait_until(done, cap, f"{len(wanted)} orders notified")
        except WaitTimeout as exc:
            log.warning("%s", exc)
            return False
        if why != "all notified":
            log.warning("waiting for %d notifications: %s", len(wanted), why)
        return why == "all notified"

    def _broker_holds(self) -> int | None:
        """Messages the broker holds on their way to a notification (every queue but the
        DLQ, the optional ones and the harness's own), or None when it cannot tell."""
        from harness.brokers import management
        return management.messages_held(self.broker, self.lab.vhost or "/", lambda q: (
            q == topo.DLQ or q.startswith("harness.")
            or q.split(".retry.")[0] in topo.OPTIONAL_QUEUES))

    def wait_depth(self, queue: str, predicate: Any, timeout: float, what: str) -> int:
        """Wait (bounded) until a queue's ready count satisfies `predicate`; return it."""
        def probe():
            n = amqp.depth(self.lab.amqp_url, queue)
            return (n,) if predicate(n) else None
        try:
            self.wait_declared(queue)
            return wait_until(probe, timeout, what)[0]
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 404:
                raise
            # A contract gap, not a crash: noted, and raised as a time-out that the
            # scenario may pass over (nothing will ever be counted in a missing queue).
            self.gap(f"queue '{queue}'", "does not exist", ("dlq",) if queue == topo.DLQ else ())
            raise QueueMissing(f"queue '{queue}' does not exist (waiting for {what})") from None

    def wait_declared(self, name: str, *, exchange: bool = False) -> None:
        """Wait, until DECLARE_GRACE_S after the lab's start, for a queue (or an exchange)
        the services may not have declared yet: a submission's consumer thread may declare
        them a moment after its /health answers (the original lab's does). Past that, what
        uses it finds it missing (404, a contract gap)."""
        what = f"{'exchange' if exchange else 'queue'} '{name}'"
        left = self.started + DECLARE_GRACE_S - time.monotonic()
        try:
            wait_until(lambda: amqp.declared(self.lab.amqp_url, name, exchange=exchange),
                       max(0.0, left), f"{what} declared", interval=0.2)
        except WaitTimeout:
            log.info("%s not declared %.0f s after the lab's start", what, DECLARE_GRACE_S)

    # ---- judging -----------------------------------------------------------------------------

    def collect(self) -> RunState:
        """Read what the services and the DLQ hold now (the DLQ is only looked at).

        A service that has died reads as empty, and is noted in `died`: the checks then say
        what its death cost, and the report card says that it died. A path that is missing
        or answers another shape, and a missing DLQ, are contract gaps: noted, read as
        empty and named in `unknown`, never raised, so every other check is still judged.
        """
        lab = self.lab
        unknown: set[str] = set()
        empty: dict[str, Any] = {"orders": [], "inventory": {},
                                 "ledger": {"reservations": [], "outcomes": []},
                                 "notifications": []}
        read: dict[str, Any] = {}
        for fld, (name, path, shape) in STATE_PATHS.items():
            svc = lab.services[name]
            if not svc.running:
                self.died.setdefault(name, (svc.exit_code, svc.log_tail(8)))
                read[fld] = empty[fld]
                continue
            if not svc.http:  # the lab noted that gap at start
                unknown.add(fld)
                read[fld] = empty[fld]
                continue
            value, problem = self._read(name, path, shape)
            if problem is not None:
                self.gap(f"GET {path} ({name})", problem, (fld,))
                unknown.add(fld)
                value = empty[fld]
            read[fld] = value
        read["ledger"].setdefault("outcomes", [])
        if "orders" not in unknown and read["orders"] and read["notifications"]:
            # Updating an order's status (consuming order_status) is optional: note whether
            # this implementation does, so that the checks needing it can be skipped.
            self.observed["status_updates"] = any(
                o.get("status") not in (None, "PENDING") for o in read["orders"])
        return RunState(**read, dlq=self._read_dlq(unknown), unknown=unknown,
                        health={name: svc.health() for name, svc in lab.services.items()})

    def _read(self, name: str, path: str, shape: Any) -> tuple[Any, str | None]:
        """GET a service's state path: (value, None), or (None, what was wrong)."""
        try:
            value = self.lab.get(name, path)
        except requests.HTTPError as exc:
            return None, f"answered {exc.response.status_code}"
        except requests.RequestException as exc:
            return None, f"did not answer ({exc.__class__.__name__})"
        except ValueError:
            return None, "answered a body that is not JSON"
        if not shape(value):
            return None, f"answered another shape than the contract's: {str(value)[:120]}"
        return value, None

    def _read_dlq(self, unknown: set[str]) -> list[dict[str, Any]]:
        try:
            return amqp.read_queue(self.lab.amqp_url, topo.DLQ)
        except pika.exceptions.ChannelClosedByBroker as exc:
            self.gap(f"queue '{topo.DLQ}'", "does not exist" if exc.reply_code == 404
                     else f"cannot be read: {exc.reply_text}", ("dlq",))
        except (pika.exceptions.AMQPError, OSError) as exc:
            self.gap(f"queue '{topo.DLQ}'", f"cannot be read: {exc!r}", ("dlq",))
        unknown.add("dlq")
        return []

    def judge(self, load: pd.DataFrame, state: RunState, **expect: Any) -> Verdict:
        """Run the checker on the accepted orders and the final state."""
        accepted = load.loc[load["accepted"], "order_id"].tolist()
        return check_run(accepted=accepted, inventory=state.inventory, ledger=state.ledger,
                         notifications=state.notifications, dlq=state.dlq, **expect)

    def base_summary(self, load: pd.DataFrame, state: RunState, verdict: Verdict,
                     latency: pd.DataFrame) -> dict[str, Any]:
        """The fields every scenario's summary has (the keyword arguments of RunSummary)."""
        c = verdict.counts
        return {
            "scenario": self.scenario,
            "impl": self.impl.name,
            "broker": {"provider": self.broker.provider,
                       "version": _broker_version(self.broker)},
            "orders_requested": int(len(load)),
            "orders_placed": c["orders_placed"],
            "orders_refused": int((~load["accepted"]).sum()),
            "reserved": c["reserved"],
            "failed": c["failed"],
            "notified": c["notified"],
            "dlq_messages": c["dlq_messages"],
            "lost": c["lost"],
            "duplicate_notifications": c["duplicate_notifications"],
            "double_reservations": c["double_reservations"],
            "stock_conserved": c["stock_conserved"],
            "latency_ms": percentiles(latency["end_to_end_ms"]) if not latency.empty else {},
            "http_ms": percentiles(load.loc[load["accepted"], "http_ms"]),
            "sampler": self.sampler.cost() if self.sampler else {},
            "duration_s": round(time.monotonic() - self.t0, 2),
        }

    def frames(self, load: pd.DataFrame, state: RunState) -> dict[str, pd.DataFrame]:
        """The standard frames of a run: orders, notifications, latency, queue samples."""
        orders = load.drop(columns=["items"])
        return {
            "orders": orders,
            "notifications": pd.DataFrame(state.notifications),
            "latency": latency_frame(state.notifications, orders, self.timeline),
            "queue_depth": self.sampler.frame() if self.sampler else pd.DataFrame(),
            "dlq": pd.DataFrame(state.dlq, columns=["reason", "attempts", "original_queue",
                                                    "routing_key", "body"]),
        }


def _broker_version(broker: Any) -> str:
    try:
        return broker.version()
    except Exception:
        return "unknown"
