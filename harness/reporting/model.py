"""A small queue model: predict a queue's depth and drain time without a broker.

The model is a deterministic fluid queue in discrete time. Messages arrive at given times;
while they are up, `consumers` consumers each take `service_rate` messages per second; an
optional outage stops them (as the backlog-drain scenario stops the inventory). Nothing is
random unless you ask for seeded random arrivals. It is the back-of-the-envelope version of
the backlog-drain scenario: `measure_backlog_drain` reads the model's inputs (arrival times,
outage, service rate) from a real run, so prediction and measurement can be overlaid, and
then every "what if" (more consumers, a faster handler, orders that keep coming) runs in
milliseconds.

    from harness.reporting.model import drain_time, simulate, steady_arrivals

    drain_time(300, service_rate=80)                      # 3.75 s
    drain_time(300, service_rate=80, arrival_rate=50)     # 10 s: only the spare 30 msg/s drains
    p = simulate(steady_arrivals(50, stop=20), 80, backlog=300)
    p.drain_time_s, p.frame[["t", "depth"]]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

# The model is fluid (it serves fractions of a message): below this, a queue counts as empty.
EMPTY = 1e-6
MAX_STEPS = 2_000_000  # a guard against an `until` / `dt` pair that would never finish


# ---- closed forms --------------------------------------------------------------------------


def drain_time(backlog: float, service_rate: float, arrival_rate: float = 0.0, *,
               consumers: int = 1, startup_delay: float = 0.0) -> float:
    """Seconds until a backlog is gone: backlog / (consumers * service_rate - arrival_rate).

    Args:
        backlog: messages waiting when the consumers return.
        service_rate: messages per second one consumer handles (mu).
        arrival_rate: messages per second still arriving meanwhile (lambda).
        consumers: consumers sharing the queue (c); capacity is c * mu.
        startup_delay: seconds before the consumers take their first message; arrivals
            during it join the backlog.

    Returns `math.inf` when the capacity does not exceed the arrival rate and there is a
    backlog to drain: the queue then never empties.
    """
    _check_rates(service_rate, arrival_rate, consumers)
    if backlog < 0 or startup_delay < 0:
        raise ValueError("backlog and startup_delay must be >= 0")
    waiting = backlog + arrival_rate * startup_delay
    if waiting == 0:
        return float(startup_delay)
    spare = consumers * service_rate - arrival_rate
    if spare <= 0:
        return math.inf
    return startup_delay + waiting / spare


def littles_law_wait(mean_queue_length: float, arrival_rate: float) -> float:
    """Mean time a message spends in the queue, W = L / lambda (Little's law)."""
    if arrival_rate <= 0:
        raise ValueError("arrival_rate must be > 0")
    if mean_queue_length < 0:
        raise ValueError("mean_queue_length must be >= 0")
    return mean_queue_length / arrival_rate


def littles_law_length(arrival_rate: float, mean_wait: float) -> float:
    """Mean number of messages in the queue, L = lambda * W (Little's law)."""
    if arrival_rate < 0 or mean_wait < 0:
        raise ValueError("arrival_rate and mean_wait must be >= 0")
    return arrival_rate * mean_wait


def utilisation(arrival_rate: float, service_rate: float, consumers: int = 1) -> float:
    """Fraction of the consumers' capacity the arrivals need, rho = lambda / (c * mu)."""
    _check_rates(service_rate, arrival_rate, consumers)
    return arrival_rate / (consumers * service_rate)


def _check_rates(service_rate: float, arrival_rate: float, consumers: int) -> None:
    if service_rate <= 0:
        raise ValueError(f"service_rate must be > 0, not {service_rate}")
    if arrival_rate < 0:
        raise ValueError(f"arrival_rate must be >= 0, not {arrival_rate}")
    if consumers < 1:
        raise ValueError(f"consumers must be >= 1, not {consumers}")


# ---- arrival schedules -------------------------------------------------------------------


def steady_arrivals(rate: float, *, start: float = 0.0, stop: float | None = None,
                    count: int | None = None) -> np.ndarray:
    """Arrival times of messages sent every 1/rate seconds from `start` (give stop or count)."""
    if rate <= 0:
        raise ValueError("rate must be > 0")
    if (stop is None) == (count is None):
        raise ValueError("give exactly one of stop= or count=")
    if count is None:
        count = max(0, math.ceil((stop - start) * rate - 1e-9))
    return start + np.arange(count) / rate


def random_arrivals(rate: float, *, seed: int, start: float = 0.0,
                    stop: float | None = None, count: int | None = None) -> np.ndarray:
    """Poisson arrivals (exponential gaps) at a mean `rate`, reproducible from `seed`."""
    if rate <= 0:
        raise ValueError("rate must be > 0")
    if (stop is None) == (count is None):
        raise ValueError("give exactly one of stop= or count=")
    rng = np.random.default_rng(seed)
    if count is not None:
        return start + np.cumsum(rng.exponential(1 / rate, size=count))
    times = start + np.cumsum(rng.exponential(1 / rate, size=int((stop - start) * rate * 2) + 10))
    while times[-1] < stop:  # rare: draw more until the window is covered
        more = times[-1] + np.cumsum(rng.exponential(1 / rate, size=len(times)))
        times = np.concatenate([times, more])
    return times[times < stop]


# ---- simulation --------------------------------------------------------------------------


@dataclass(frozen=True)
class Outage:
    """A window [start, end) in seconds when the consumers are down."""

    start: float
    end: float

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(f"outage ends ({self.end}) before it starts ({self.start})")


@dataclass(frozen=True)
class Prediction:
    """The model's depth curve, and when the queue is empty again."""

    frame: pd.DataFrame  # t, depth (ready), in_system (ready + in flight), arrived, served
    empty_at: float  # first time the queue is empty once the consumers are back (inf: never)
    drain_time_s: float  # empty_at minus the consumers' restart (or the start): inf if never

    @property
    def depth(self) -> pd.DataFrame:
        """The predicted depth curve only: columns t and depth."""
        return self.frame[["t", "depth"]]


def simulate(arrivals: Sequence[float] | np.ndarray, service_rate: float, *,
             consumers: int = 1, prefetch: int = 0, backlog: float = 0.0,
             outage: Outage | tuple[float, float] | None = None, startup_delay: float = 0.0,
             start: float = 0.0, until: float | None = None, dt: float = 0.01) -> Prediction:
    """Step a FIFO queue through time and return its depth curve and drain time.

    Args:
        arrivals: arrival time of each message (seconds; those before `start` count as
            already waiting at `start`).
        service_rate: messages per second one consumer handles (mu).
        consumers: consumers sharing the queue (c).
        prefetch: messages each running consumer holds unacknowledged; they leave the
            queue's "ready" count (the depth the sampler shows) but not the system, and go
            back to ready while the consumers are down.
        backlog: messages already waiting at `start`.
        outage: (start, end) when the consumers are down: end is the restart command.
        startup_delay: seconds after the outage's end before the consumers take messages.
        start: time of the first step.
        until: time of the last step (default: long enough to drain at full capacity).
        dt: step length in seconds.
    """
    _check_rates(service_rate, 0.0, consumers)
    if prefetch < 0 or backlog < 0 or startup_delay < 0 or dt <= 0:
        raise ValueError("prefetch, backlog and startup_delay must be >= 0; dt > 0")
    times = np.sort(np.asarray(arrivals, dtype=float))
    if outage is not None and not isinstance(outage, Outage):
        outage = Outage(*outage)
    down_from, back_at = ((outage.start, outage.end + startup_delay) if outage
                          else (math.inf, math.inf))
    capacity = consumers * service_rate
    if until is None:
        last = max(times[-1] if len(times) else start, back_at if outage else start, start)
        until = last + (backlog + len(times)) / capacity + 1.0
    steps = math.ceil((until - start) / dt - 1e-9)
    if steps > MAX_STEPS:
        raise ValueError(f"{steps} steps is too many: raise dt or lower until")
    edges = start + dt * np.arange(steps + 1)
    arrived = np.searchsorted(times, edges, side="right").astype(float)
    per_step = np.diff(arrived)
    mids = edges[:-1] + dt / 2
    up = ~((mids >= down_from) & (mids < back_at))
    in_system = np.empty(steps + 1)
    served = np.zeros(steps + 1)
    level = backlog + arrived[0]
    in_system[0] = level
    per_step_capacity = capacity * dt
    for k in range(steps):
        level += per_step[k]
        if up[k]:
            take = min(level, per_step_capacity)
            level -= take
            served[k + 1] = served[k] + take
        else:
            served[k + 1] = served[k]
        in_system[k + 1] = level
    running = np.concatenate([[not (down_from <= start < back_at)], up])
    held = np.where(running, consumers * prefetch, 0)
    depth = np.maximum(in_system - held, 0.0)
    frame = pd.DataFrame({"t": edges, "depth": depth, "in_system": in_system,
                          "arrived": arrived + backlog, "served": served})
    since = back_at if outage else start
    empty = np.flatnonzero((edges >= since - 1e-9) & (in_system <= EMPTY))
    empty_at = float(edges[empty[0]]) if len(empty) else math.inf
    origin = outage.end if outage else start
    return Prediction(frame, empty_at, empty_at - origin if math.isfinite(empty_at) else math.inf)


# ---- measuring a run ---------------------------------------------------------------------


def time_average(frame: pd.DataFrame, column: str = "depth", *, start: float | None = None,
                 end: float | None = None) -> float:
    """Time-weighted mean of a sampled column over [start, end] (trapezoids between samples)."""
    f = frame.dropna(subset=[column]).sort_values("t")
    if start is not None:
        f = f[f["t"] >= start]
    if end is not None:
        f = f[f["t"] <= end]
    if len(f) < 2:
        raise ValueError("need at least two samples in the window")
    t = f["t"].to_numpy(dtype=float)
    y = f[column].to_numpy(dtype=float)
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(t)) / (t[-1] - t[0]))


def service_rate_from_decisions(times: Sequence[float] | np.ndarray) -> float:
    """Messages per second from the times a consumer finished them: (n - 1) / span."""
    t = np.sort(np.asarray(times, dtype=float))
    if len(t) < 2 or t[-1] <= t[0]:
        raise ValueError("need at least two distinct completion times")
    return float((len(t) - 1) / (t[-1] - t[0]))


def service_rate_from_depth(depth: pd.DataFrame, *, start: float,
                            column: str = "depth") -> float:
    """Drain rate from the slope of a falling depth curve after `start` (a least-squares fit).

    Only samples strictly between empty and the peak count: the flat top and the empty tail
    say nothing about the rate.
    """
    f = depth[depth["t"] >= start].dropna(subset=[column])
    peak = f[column].max()
    falling = f[(f[column] > 0) & (f[column] < peak)]
    if len(falling) < 2:
        raise ValueError("fewer than two samples on the falling edge")
    slope = np.polyfit(falling["t"].to_numpy(float), falling[column].to_numpy(float), 1)[0]
    if slope >= 0:
        raise ValueError("the depth does not fall after start")
    return float(-slope)


def startup_from_depth(depth: pd.DataFrame, *, start: float, column: str = "depth") -> float:
    """Seconds from `start` until the depth first fell below its peak: the consumer's first
    delivery (taken halfway between the last sample at the peak and the first below it)."""
    f = depth[depth["t"] >= start].dropna(subset=[column]).sort_values("t")
    if f.empty:
        raise ValueError("no samples after start")
    peak = f[column].max()
    below = np.flatnonzero(f[column].to_numpy(float) < peak)
    if not len(below) or below[0] == 0:
        raise ValueError("the depth does not fall from a peak after start")
    t = f["t"].to_numpy(float)
    return float((t[below[0] - 1] + t[below[0]]) / 2 - start)


@dataclass(frozen=True)
class DrainMeasurement:
    """What a backlog-drain run measured, in the model's terms."""

    service_rate: float  # msg/s while draining (one consumer)
    backlog: int  # messages waiting when the inventory came back
    prefetch: int
    arrivals: np.ndarray  # when each accepted order was in the queue (s since run start)
    outage: Outage  # inventory stopped -> restart command
    startup_delay: float  # restart command -> first order taken
    drain_time_s: float  # restart command -> last backlog order decided
    depth: pd.DataFrame  # the measured curve: t, depth (ready messages in the queue)

    def predict(self, **overrides: Any) -> Prediction:
        """Simulate this run's schedule; keyword arguments override the measured inputs."""
        inputs: dict[str, Any] = {"arrivals": self.arrivals, "service_rate": self.service_rate,
                                  "prefetch": self.prefetch, "outage": self.outage,
                                  "startup_delay": self.startup_delay}
        inputs.update(overrides)
        return simulate(inputs.pop("arrivals"), inputs.pop("service_rate"), **inputs)


def _timeline_time(timeline: pd.DataFrame, kinds: tuple[str, ...], target: str) -> float:
    rows = timeline[timeline["kind"].isin(kinds) & (timeline["target"] == target)]
    if rows.empty:
        raise ValueError(f"the timeline has no {'/'.join(kinds)} of {target}")
    return float(rows["t"].iloc[0])


def measure_backlog_drain(result: Any, *, queue: str = "order_placed",
                          consumer: str = "inventory") -> DrainMeasurement:
    """Read the model's inputs from a backlog-drain ScenarioResult (summary, frames, timeline).

    The service rate is the scenario's `drain_rate_msg_s` (from the inventory's own outcome
    times); the start-up delay is the time from the restart command to the first decision,
    less one service time.
    """
    # A DrainSummary (harness.scenarios.summary), read by attribute: a renamed field fails
    # here loudly instead of reading as None.
    summary, frames, timeline = result.summary, result.frames, result.timeline
    stopped = _timeline_time(timeline, ("stop", "kill"), consumer)
    restarted = _timeline_time(timeline, ("start", "restart"), consumer)
    orders = frames["orders"]
    arrivals = orders.loc[orders["accepted"], "t_answered"].to_numpy(dtype=float)
    samples = frames["queue_depth"]
    samples = samples[samples["queue"] == queue].sort_values("t")
    depth = pd.DataFrame({"t": samples["t"].to_numpy(float),
                          "depth": samples["ready"].to_numpy(float)})
    lat = frames.get("latency", pd.DataFrame())
    decided = np.array([])
    if {"t_notified", "notify_ms"} <= set(lat.columns):
        decided = (lat["t_notified"] - lat["notify_ms"] / 1000).dropna().to_numpy(float)
        decided = decided[decided >= restarted]
    rate = summary.drain_rate_msg_s
    if not rate:
        rate = (service_rate_from_decisions(decided) if len(decided) >= 2
                else service_rate_from_depth(depth, start=restarted))
    rate = float(rate)
    startup = max(0.0, float(decided.min()) - restarted - 1 / rate) if len(decided) else 0.0
    drained = summary.time_to_empty_s
    if drained is None and len(decided):
        drained = float(decided.max()) - restarted
    backlog = summary.backlog_peak or int(len(arrivals))
    return DrainMeasurement(
        service_rate=rate, backlog=int(backlog), prefetch=int(summary.prefetch or 0),
        arrivals=arrivals, outage=Outage(stopped, restarted), startup_delay=startup,
        drain_time_s=float(drained) if drained is not None else math.nan, depth=depth)
