"""The drain measurements of `harness bench`: the plain-pika floor and a lab inventory,
each draining the same backlog of valid orders on the same broker."""

from __future__ import annotations

import logging
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness import amqp
from harness.bench import topology_vhost
from harness.bench.floor import run_floor
from harness.brokers import Broker
from harness.brokers.procs import rss_mb
from harness.lab import Lab, LabConfig
from harness.lab.impl import Impl
from harness.load import LoadSpec, order_mix
from harness.waiting import Periodic, wait_until
from lab_services import events
from lab_services import topology as topo
from lab_services.outbox import order_placed_message

log = logging.getLogger(__name__)

PLENTY = "10000000"
OTHERS = ("order", "notification")  # stopped while the inventory drains


def _publish_backlog(amqp_url: str, n: int) -> None:
    """Publish n valid OrderPlaced events straight to the exchange (fast: no confirms)."""
    mix = order_mix(LoadSpec(orders=n, seed=99, progress=False))
    with amqp.channel(amqp_url, confirm=False) as ch:
        for i, o in enumerate(mix):
            items = events.validate_items(o["items"])
            event = events.order_placed(f"ORD-BENCH-{i:07d}", o["user_id"], items)
            msg = order_placed_message(event.to_json(), event.order_id, event.event_id)
            ch.basic_publish(msg.exchange, msg.routing_key, msg.body, msg.properties)


def _wait_backlog(amqp_url: str, n: int) -> None:
    wait_until(lambda: amqp.depth(amqp_url, topo.QUEUE_ORDER_PLACED) >= n, 60 + n / 1000,
               f"a backlog of {n} orders")


def floor_drain(broker: Broker, backlog: int, prefetch: int = 200,
                synchronous: str = "FULL") -> dict[str, Any]:
    """The plain-pika inventory draining `backlog` orders, in a vhost of its own."""
    with topology_vhost(broker, "bench-floor") as url:
        _publish_backlog(url, backlog)
        _wait_backlog(url, backlog)
        with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
            result = run_floor(url, Path(tmp) / "floor.sqlite", backlog, prefetch, synchronous)
    return {"backlog": backlog, "prefetch": prefetch, "drain_rate_msg_s": round(result.rate, 1),
            "seconds": round(result.seconds, 3), "bursts": result.bursts}


class RssSampler:
    """Samples each service's resident memory (psutil) in the background; keeps the max."""

    def __init__(self, lab: Lab, interval: float = 0.2) -> None:
        self.lab, self.interval = lab, interval
        self.peak: dict[str, float] = {}
        self._loop = Periodic(self._tick, interval, name="rss-sampler", join_timeout=5)

    def __enter__(self) -> RssSampler:
        self._loop.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.stop()

    def _tick(self) -> None:
        for name, svc in self.lab.services.items():
            if svc.proc is not None and svc.running:
                mb = rss_mb(svc.proc.pid)
                if mb is not None:
                    self.peak[name] = max(mb, self.peak.get(name, 0.0))


def py_spy(pid: int, out: Path) -> subprocess.Popen[bytes] | None:
    """Start `py-spy record --format raw` on a process, or None if py-spy cannot run.

    It samples until `stop_py_spy` (SIGINT, on which py-spy writes its output).
    """
    try:
        return subprocess.Popen(["py-spy", "record", "-p", str(pid), "--format", "raw",
                                 "--rate", "250", "-o", str(out), "--nonblocking"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except OSError as exc:
        log.warning("py-spy not available: %s", exc)
        return None


def stop_py_spy(spy: subprocess.Popen[bytes] | None) -> None:
    """Stop a py-spy started by `py_spy`, letting it write its output."""
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=60)


@contextmanager
def spying(pid: int, out: Path) -> Iterator[None]:
    """py-spy on a process for the duration of the block (nothing if py-spy cannot run)."""
    spy = py_spy(pid, out)
    try:
        yield
    finally:
        stop_py_spy(spy)


def drain_rate(broker: Broker, backlog: int, prefetch: int = 200,
               profile_to: Path | None = None, synchronous: str = "FULL",
               impl: Impl | str | Path | None = None) -> dict[str, Any]:
    """Build a backlog with the inventory stopped, start it, and time the drain.

    `impl` runs another implementation (its own prefetch and store; the lab's knobs
    `prefetch` and `synchronous` reach only the lab's own services).
    """
    cfg = LabConfig(prefetch=prefetch, initial_stock=PLENTY, log_level="WARNING",
                    extra_env={"SQLITE_SYNCHRONOUS": synchronous})
    spy = None
    with Lab(broker, cfg, impl=impl) as lab, RssSampler(lab) as rss:
        # The inventory drains alone, as the floor does: nothing else on these two cores
        # consumes its outcomes meanwhile. The others start afterwards and must then
        # notify every order (the run still proves nothing was lost).
        for name in ("inventory", *OTHERS):
            lab.stop(name)
        _publish_backlog(lab.amqp_url, backlog)
        _wait_backlog(lab.amqp_url, backlog)
        lab.start_service("inventory", wait=False)
        if profile_to is not None:
            spy = py_spy(lab.services["inventory"].proc.pid, profile_to)
        wait_until(lambda: amqp.depth(lab.amqp_url, topo.QUEUE_ORDER_PLACED) == 0
                   and lab.services["inventory"].health(), 120 + backlog / 100, "drained")
        stop_py_spy(spy)
        for name in OTHERS:
            lab.start_service(name)
        notes = wait_until(lambda: (lambda n: n if len(n) >= backlog else None)(
            lab.notifications()), 120 + backlog / 200, "all notified")
    decided = sorted(events.parse_timestamp(n["outcome_timestamp"]) for n in notes)
    span = (decided[-1] - decided[0]).total_seconds()
    return {"impl": lab.impl.name, "backlog": backlog,
            "prefetch": prefetch if lab.impl.services["inventory"].lab else None,
            "drain_rate_msg_s": round((len(decided) - 1) / span, 1) if span else None,
            "rss_mb_peak": rss.peak,
            **({"profile": str(profile_to)} if profile_to is not None else {})}
