"""A chaos run's fault schedule, as data: rows of (at_s, action, target, params).

The schedule is drawn from a seed before the run starts, so the same seed gives the same
faults at the same planned times; the run executes it row by row and writes it into the
run folder. Nothing here touches a broker or a process: drawing is pure.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.chaos.messages import KINDS
from lab_services import topology as topo
from lab_services.contract import SERVICES

# The actions a schedule is drawn from. Kills come with the matching start row, the
# memory alarm with the row that clears it: every row is one thing done at one time.
KILL = "kill"  # SIGKILL a service's process group, or the broker's
START = "start"  # start it again (a service: without waiting; the broker: until it answers)
MEMORY_ALARM = "memory alarm"  # rabbitmqctl set_vm_memory_high_watermark <params.watermark>
MEMORY_CLEAR = "memory alarm clear"  # the same, back to the normal watermark
STORM = "duplicate storm"  # every order accepted in [at_s, at_s + duration_s) sent 2x more
FLOOD = "malformed flood"  # params.count malformed messages onto order.placed
POISON = "poison order"  # one OrderPlaced whose handling always fails (params.kind, .order_id)
ACTIONS = (KILL, START, MEMORY_ALARM, MEMORY_CLEAR, STORM, FLOOD, POISON)

# The poison kinds. HOSTILE is for any implementation: an OrderPlaced valid in every field
# but one quantity of 2**63 (an integer, above zero, and past the contract's 1..1000 and a
# 64-bit column): a careful consumer dead-letters it with a reason, a careless one crashes or
# requeues it. CRASH is the lab's own (white-box): its inventory exits at `before_commit` each
# time it handles this order id (LAB_CRASH_AT), so only the delivery limit ends it, and the
# valid orders delivered with it must not be charged for its crashes (issue 18, item 1).
HOSTILE, CRASH = "hostile", "crash"
POISON_KINDS = (HOSTILE, CRASH)

ALARM_WATERMARK = 0.0001  # blocks every publisher of the node within a second
NORMAL_WATERMARK = 0.4  # RabbitMQ's default
MALFORMED_SHARE = 0.10  # of all messages on order.placed


@dataclass(frozen=True)
class Fault:
    """One planned fault: when (seconds after the run starts), what, on what, with what."""

    at_s: float
    action: str
    target: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_row(self) -> dict[str, Any]:
        """The fault as a flat row (params as JSON) for CSV."""
        return {"at_s": self.at_s, "action": self.action, "target": self.target,
                "params": json.dumps(self.params, sort_keys=True)}


@dataclass(frozen=True)
class ScheduleSpec:
    """What a schedule is drawn for: the seed, the load's length, and how much of each fault."""

    seed: int
    window_s: float  # faults fall inside the load: [lead_in, window_s - tail]
    orders: int
    kills_per_service: int = 3
    broker_kills: int = 1
    memory_alarms: int = 1
    alarm_s: float = 3.0
    storms: int = 2
    floods: int = 4
    broker_faults: bool = True  # off when the broker cannot be stopped (an amqp:// URL)
    # Time the broker needs to come back (seconds): nothing else broker-wide is planned
    # inside that, so that a memory alarm never meets a node that is down.
    broker_recovery_s: float = 12.0
    kinds: tuple[str, ...] = KINDS  # the malformed kinds to draw from
    poisons: int = 1  # poison orders, each at a time drawn from the seed
    poison_kind: str = HOSTILE  # CRASH only where the run knows it runs the lab


def malformed_count(orders: int, kinds: int = len(KINDS)) -> int:
    """How many malformed messages make about MALFORMED_SHARE of order.placed's traffic."""
    return max(kinds, round(orders * MALFORMED_SHARE / (1 - MALFORMED_SHARE)))


def _spread(rng: random.Random, n: int, lo: float, hi: float, gap: float) -> list[float]:
    """n sorted times in [lo, hi] at least `gap` apart (as far as the interval allows)."""
    if n <= 0:
        return []
    gap = min(gap, (hi - lo) / max(n, 1))
    free = max(0.0, (hi - lo) - gap * (n - 1))
    offsets = sorted(rng.uniform(0, free) for _ in range(n))
    return [round(lo + o + i * gap, 2) for i, o in enumerate(offsets)]


def draw_schedule(spec: ScheduleSpec) -> list[Fault]:
    """Draw the fault schedule of a chaos run: the same spec (and seed) gives the same rows."""
    rng = random.Random(spec.seed)
    w = max(spec.window_s, 4.0)
    lo, hi = 0.1 * w, 0.85 * w
    rows: list[Fault] = []
    # Services: kill -9 at a random time, start again after a short random downtime.
    for name in SERVICES:
        for t in _spread(rng, spec.kills_per_service, lo, hi, gap=2.5):
            down = round(rng.uniform(0.2, 1.5), 2)
            rows.append(Fault(t, KILL, name, {"signal": "SIGKILL"}))
            rows.append(Fault(round(t + down, 2), START, name, {"after_down_s": down}))
    # The broker: kill -9 and restart on the same ports; a memory alarm well apart from it.
    busy: list[tuple[float, float]] = []
    if spec.broker_faults:
        for t in _spread(rng, spec.broker_kills, lo, hi, gap=spec.broker_recovery_s):
            down = round(rng.uniform(0.5, 2.0), 2)
            rows.append(Fault(t, KILL, "broker", {"signal": "SIGKILL"}))
            rows.append(Fault(round(t + down, 2), START, "broker",
                              {"after_down_s": down, "same_ports": True}))
            busy.append((t - spec.alarm_s - 1, t + down + spec.broker_recovery_s))
        for _ in range(spec.memory_alarms):
            for _attempt in range(50):
                t = round(rng.uniform(lo, hi), 2)
                if not any(a <= t <= b for a, b in busy):
                    break
            else:
                t = round(max(b for _a, b in busy) if busy else lo, 2)
            rows.append(Fault(t, MEMORY_ALARM, "broker", {"watermark": ALARM_WATERMARK}))
            rows.append(Fault(round(t + spec.alarm_s, 2), MEMORY_CLEAR, "broker",
                              {"watermark": NORMAL_WATERMARK}))
            busy.append((t - spec.alarm_s - 1, t + spec.alarm_s + spec.broker_recovery_s))
    # Duplicate storms: every order accepted during the storm is republished twice.
    for t in _spread(rng, spec.storms, 0.0, hi, gap=1.0):
        rows.append(Fault(t, STORM, topo.QUEUE_ORDER_PLACED,
                          {"duration_s": round(rng.uniform(0.15, 0.35) * w, 2),
                           "copies": ["same event_id", "new event_id"]}))
    # Poison orders, from a generator of their own: every other row stays what the seed
    # gave before poison orders existed.
    if spec.poison_kind not in POISON_KINDS:
        raise ValueError(f"poison_kind must be one of {POISON_KINDS}, not {spec.poison_kind!r}")
    poison_rng = random.Random(f"{spec.seed}:poison")
    for i, t in enumerate(_spread(poison_rng, spec.poisons, lo, hi, gap=1.0)):
        rows.append(Fault(t, POISON, topo.QUEUE_ORDER_PLACED,
                          {"kind": spec.poison_kind, "order_id": poison_order_id(spec.seed, i)}))
    # The malformed flood: about a tenth of order.placed, every kind in every run.
    if spec.floods <= 0:
        return sorted(rows, key=lambda f: (f.at_s, ACTIONS.index(f.action), f.target))
    total = malformed_count(spec.orders, len(spec.kinds))
    kinds = [spec.kinds[i % len(spec.kinds)] for i in range(total)]
    rng.shuffle(kinds)
    times = _spread(rng, spec.floods, lo, hi, gap=0.5)
    per = [total // len(times) + (1 if i < total % len(times) else 0) for i in range(len(times))]
    first = 0
    for t, n in zip(times, per, strict=True):
        rows.append(Fault(t, FLOOD, topo.QUEUE_ORDER_PLACED,
                          {"count": n, "first_tag": first, "kinds": kinds[first:first + n]}))
        first += n
    return sorted(rows, key=lambda f: (f.at_s, ACTIONS.index(f.action), f.target))


def poison_order_id(seed: int, n: int) -> str:
    """The order id of a run's n-th poison order (a valid id, never one the order service
    gives: its date part is 1999's)."""
    return f"ORD-19990101-p{seed % 10**6:06d}{n:02d}"


def poison_orders(schedule: list[Fault]) -> dict[str, str]:
    """Order id -> poison kind, for every poison order a schedule injects."""
    return {f.params["order_id"]: f.params["kind"] for f in schedule if f.action == POISON}


def flood_messages(schedule: list[Fault]) -> list[tuple[int, str]]:
    """Every malformed message a schedule injects, as (tag number, kind)."""
    out = []
    for f in schedule:
        if f.action == FLOOD:
            out += [(f.params["first_tag"] + i, k) for i, k in enumerate(f.params["kinds"])]
    return out


def write_schedule(schedule: list[Fault], run_dir: Path) -> None:
    """Write the schedule into the run folder as schedule.csv and schedule.json."""
    with (run_dir / "schedule.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["at_s", "action", "target", "params"])
        w.writeheader()
        w.writerows(fault.to_row() for fault in schedule)
    (run_dir / "schedule.json").write_text(
        json.dumps([asdict(f) for f in schedule], indent=1) + "\n")


def read_schedule(path: Path) -> list[Fault]:
    """Read a schedule.json back (to replay a run's faults)."""
    return [Fault(**row) for row in json.loads(path.read_text())]
