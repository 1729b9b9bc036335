"""One scenario run: a broker, a lab on it, a sampler, a fault timeline, a run folder."""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from harness import amqp
from harness.faults import Faults
from harness.invariants import Verdict, check_run
from harness.lab import Lab, LabConfig
from harness.lab.impl import Impl, resolve
from harness.load import LoadSpec, place_orders
from harness.observe import QueueSampler, Timeline, latency_frame, percentiles
from harness.reporting.results import keep_logs, run_folder
from harness.waiting import WaitTimeout, wait_until
from lab_services import topology as topo

log = logging.getLogger(__name__)


@dataclass
class RunState:
    """Everything the services and the DLQ hold at the end of a run."""

    orders: list[dict[str, Any]]
    inventory: dict[str, Any]
    ledger: dict[str, Any]
    notifications: list[dict[str, Any]]
    dlq: list[dict[str, Any]]
    health: dict[str, Any] = field(default_factory=dict)


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
        self.sampler: QueueSampler | None = None
        self.faults: Faults | None = None
        # Services found dead when the state was read: name -> (exit code, log tail).
        self.died: dict[str, tuple[int | None, str]] = {}

    def __enter__(self) -> Run:
        try:
            self.lab = Lab(self.broker, self.lab_config, impl=self.impl, replicas=self.replicas,
                           workdir=self.run_dir / "services")
            self._stack.callback(self._close_lab)
            self.lab.start()
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
        self._stack.close()

    def _close_lab(self) -> None:
        self.lab.close()
        keep_logs(self.run_dir / "services", self.run_dir)

    # ---- driving ---------------------------------------------------------------------------

    def place(self, spec: LoadSpec) -> pd.DataFrame:
        """Drive load against the order service; rows are times since the run started."""
        spec.progress = spec.progress and self.progress
        return place_orders(self.lab.url("order"), spec, t0=self.t0)

    def hold(self, seconds: float) -> None:
        """Let the experiment run for a while (a step of the scenario, not a wait for a result)."""
        time.sleep(seconds)

    def wait_notified(self, order_ids: list[str], timeout: float) -> bool:
        """Wait (bounded) for every order's notification; say whether all arrived.

        Stops early when a service process has died: nothing more will arrive then.
        """
        wanted = set(order_ids)

        def done() -> str | None:
            if any(not s.running for s in self.lab.services.values()):
                return "a service died"
            seen = {n["order_id"] for n in self.lab.notifications()}
            return "all notified" if wanted <= seen else None

        try:
            return wait_until(done, timeout, f"{len(wanted)} orders notified") == "all notified"
        except WaitTimeout as exc:
            log.warning("%s", exc)
            return False

    def wait_depth(self, queue: str, predicate: Any, timeout: float, what: str) -> int:
        """Wait (bounded) until a queue's ready count satisfies `predicate`; return it."""
        def probe():
            n = amqp.depth(self.lab.amqp_url, queue)
            return (n,) if predicate(n) else None
        return wait_until(probe, timeout, what)[0]

    # ---- judging -----------------------------------------------------------------------------

    def collect(self) -> RunState:
        """Read what the services and the DLQ hold now (the DLQ is only looked at).

        A service that has died reads as empty, and is noted in `died`: the checks then say
        what its death cost, and the report card says that it died.
        """
        lab = self.lab

        def read(name: str, fetch: Any, empty: Any) -> Any:
            svc = lab.services[name]
            if not svc.running:
                self.died.setdefault(name, (svc.exit_code, svc.log_tail(8)))
                return empty
            return fetch()

        return RunState(
            orders=read("order", lab.orders, []),
            inventory=read("inventory", lab.inventory, {}),
            ledger=read("inventory", lab.reservations, {"reservations": [], "outcomes": []}),
            notifications=read("notification", lab.notifications, []),
            dlq=amqp.read_queue(lab.amqp_url, topo.DLQ),
            health={name: svc.health() for name, svc in lab.services.items()},
        )

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
