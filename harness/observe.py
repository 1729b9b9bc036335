"""Watch a run: queue depth over time, the fault timeline, and latency per order and hop.

Everything lands in pandas with a `t` column: seconds since the run started, monotonic.

Ready counts come from a passive `queue_declare` per queue, which is exact and current.
The management API adds what only it knows (unacked messages), but its figures are only as
fresh as the broker's statistics (the harness's own nodes refresh them about every second):
measured here, they trail the truth by about a second, so they never draw the depth curve.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pika
import pika.exceptions

from harness.waiting import Periodic
from lab_services import events
from lab_services import topology as topo

log = logging.getLogger(__name__)

# Every queue of the one topology (retry tiers too, so that a poison order's waits show on
# the charts): a queue added there is sampled here without another list to keep in step.
LAB_QUEUES = tuple(topo.build_topology("classic").queue_names())


@dataclass
class Timeline:
    """The faults and notable moments of a run, each with its time and reason."""

    t0: float = field(default_factory=time.monotonic)
    # The wall-clock time at t0, to place events' own (wall-clock) timestamps on the run's
    # monotonic axis.
    wall0: datetime = field(default_factory=lambda: datetime.now(UTC))
    rows: list[dict[str, Any]] = field(default_factory=list)

    def now(self) -> float:
        """Seconds since the run started."""
        return time.monotonic() - self.t0

    def record(self, kind: str, target: str, detail: str = "") -> None:
        """Note that something happened now (a stop, a kill, an injection...)."""
        self.rows.append({"t": self.now(), "kind": kind, "target": target, "detail": detail})
        log.info("t=%.2fs %s %s %s", self.now(), kind, target, detail)

    def at(self, timestamp: str) -> float:
        """An envelope's ISO timestamp as seconds since the run started."""
        return (events.parse_timestamp(timestamp) - self.wall0).total_seconds()

    def frame(self) -> pd.DataFrame:
        """The timeline as a DataFrame (t, kind, target, detail)."""
        return pd.DataFrame(self.rows, columns=["t", "kind", "target", "detail"])


class QueueSampler:
    """A background thread that samples every lab queue's depth at a fixed interval."""

    def __init__(self, broker: Any, amqp_url: str | Callable[[], str], vhost: str | None,
                 t0: float, *,
                 interval: float = 0.25, queues: tuple[str, ...] = LAB_QUEUES,
                 source: str = "auto") -> None:
        self.broker, self.amqp_url, self.vhost, self.t0 = broker, amqp_url, vhost or "/", t0
        self.interval, self.queues = interval, queues
        if source == "auto":
            source = "management" if broker.management_url else "declare"
        self.source = source
        self.rows: list[dict[str, Any]] = []
        self.costs: list[float] = []
        self.errors = 0
        self._loop = Periodic(self._tick, interval, name="queue-sampler", fixed_rate=True,
                              finish=self._close)
        self._conn: pika.BlockingConnection | None = None
        self._ch: Any = None

    def start(self) -> QueueSampler:
        """Start sampling in the background."""
        self._loop.start()
        return self

    def stop(self) -> None:
        """Stop sampling (takes at most one interval)."""
        self._loop.stop()

    def __enter__(self) -> QueueSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _tick(self) -> None:
        began = time.monotonic()
        try:
            self._sample(began - self.t0)
        except Exception as exc:  # the broker may be down on purpose: note a gap
            self.errors += 1
            self._conn = None
            log.debug("sample failed: %s", exc)
            for q in self.queues:
                self.rows.append({"t": began - self.t0, "queue": q, "ready": None,
                                  "unacked": None, "consumers": None})
        self.costs.append(time.monotonic() - began)

    def _close(self) -> None:
        # pika connections belong to the thread that made them: close it there, not in stop().
        if self._conn is not None and self._conn.is_open:
            with contextlib.suppress(Exception):
                self._conn.close()

    def _sample(self, t: float) -> None:
        # Ready counts come from passive declares: exact and current (0.25 ms each).
        # Unacked counts exist only in the management statistics, which lag by about the
        # statistics interval; both readings are kept so the lag itself can be shown.
        if self._conn is None or not self._conn.is_open:
            # A callable URL follows a cluster's live nodes: after a node dies, the next
            # connection goes to a survivor.
            url = self.amqp_url() if callable(self.amqp_url) else self.amqp_url
            self._conn = pika.BlockingConnection(pika.URLParameters(url))
            self._ch = None
        if self._ch is None or not self._ch.is_open:
            self._ch = self._conn.channel()  # kept: a channel costs two round trips
        exact: dict[str, tuple[int | None, int | None]] = {}
        for q in self.queues:
            try:
                ok = self._ch.queue_declare(q, passive=True).method
                exact[q] = (ok.message_count, ok.consumer_count)
            except pika.exceptions.ChannelClosedByBroker:
                # Not declared (yet) by the implementation: no reading, and a new channel.
                exact[q] = (None, None)
                self._ch = self._conn.channel()
        stats: dict[str, Any] = {}
        if self.source == "management":
            from harness.brokers import management as admin
            try:
                stats = {q["name"]: q for q in admin.queues(self.broker, self.vhost)}
            except Exception as exc:
                log.debug("management sample failed: %s", exc)
        for q in self.queues:
            s = stats.get(q, {})
            self.rows.append({"t": t, "queue": q, "ready": exact[q][0],
                              "unacked": s.get("messages_unacknowledged"),
                              "consumers": exact[q][1],
                              "ready_mgmt": s.get("messages_ready")})

    def frame(self) -> pd.DataFrame:
        """Samples as rows: t, queue, ready, unacked, consumers."""
        rows = list(self.rows)  # a snapshot: the sampler thread may still be appending
        return pd.DataFrame(rows, columns=["t", "queue", "ready", "unacked", "consumers",
                                           "ready_mgmt"])

    def cost(self) -> dict[str, float]:
        """What sampling cost: samples taken, mean and max milliseconds per sample."""
        if not self.costs:
            return {"samples": 0, "mean_ms": 0.0, "max_ms": 0.0, "errors": self.errors}
        return {"samples": len(self.costs),
                "mean_ms": round(1000 * sum(self.costs) / len(self.costs), 2),
                "max_ms": round(1000 * max(self.costs), 2), "errors": self.errors,
                "interval_s": self.interval, "source": self.source}


def latency_frame(notifications: list[dict[str, Any]], accepted: pd.DataFrame | None = None,
                  timeline: Timeline | None = None) -> pd.DataFrame:
    """Per-order latency in ms from the events' own timestamps: placed->reserved->notified."""
    rows = []
    for n in notifications:
        # Another implementation may leave the timestamps out, or write them its own way.
        try:
            placed = events.parse_timestamp(n["order_timestamp"])
            decided = events.parse_timestamp(n["outcome_timestamp"])
            notified = events.parse_timestamp(n["notified_at"])
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
        rows.append({
            "order_id": n["order_id"],
            "status": n.get("status"),
            "placed_at": placed,
            "inventory_ms": (decided - placed).total_seconds() * 1000,
            "notify_ms": (notified - decided).total_seconds() * 1000,
            "end_to_end_ms": (notified - placed).total_seconds() * 1000,
            "t_notified": timeline.at(n["notified_at"]) if timeline else None,
        })
    frame = pd.DataFrame(rows, columns=["order_id", "status", "placed_at", "inventory_ms",
                                        "notify_ms", "end_to_end_ms", "t_notified"])
    if accepted is not None and not accepted.empty and not frame.empty:
        frame = frame.merge(accepted[["order_id", "t_sent", "http_ms"]], on="order_id",
                            how="left")
    return frame


def percentiles(series: pd.Series) -> dict[str, float | None]:
    """p50, p95, p99 and max of a latency series, in ms (None when empty)."""
    s = series.dropna()
    if s.empty:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    return {"p50": round(float(s.quantile(0.5)), 2), "p95": round(float(s.quantile(0.95)), 2),
            "p99": round(float(s.quantile(0.99)), 2), "max": round(float(s.max()), 2)}
