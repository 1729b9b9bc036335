"""Typed summaries of scenario runs: what summary.json holds, and what model.py reads.

Each summary is a dataclass that also reads like a mapping (`summary["lost"]`), so that
notebooks and reports written against the old dictionaries keep working.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any


class Summary(Mapping):
    """A dataclass that also reads like a read-only dict of its fields."""

    def __getitem__(self, key: str) -> Any:
        if key in self._names():
            return getattr(self, key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def _names(self) -> list[str]:
        return [f.name for f in fields(self)]  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        """The summary as plain data (nested dataclasses become dicts)."""
        return asdict(self)  # type: ignore[call-overload]


@dataclass
class RunSummary(Summary):
    """The fields every run of a pipeline has."""

    scenario: str
    impl: str
    broker: dict[str, str]
    orders_requested: int
    orders_placed: int
    orders_refused: int
    reserved: int
    failed: int
    notified: int
    dlq_messages: int
    lost: int
    duplicate_notifications: int
    double_reservations: int
    stock_conserved: bool
    latency_ms: dict[str, float]
    http_ms: dict[str, float]
    sampler: dict[str, Any]
    duration_s: float


@dataclass
class DrainSummary(RunSummary):
    """Backlog drain: the backlog's peak, and how fast it went away."""

    backlog_peak: int = 0
    arrival_rate_msg_s: float = 0.0
    work_ms: float = 0.0
    prefetch: int = 0
    drain_rate_msg_s: float | None = None
    time_to_empty_s: float | None = None
    first_decision_s: float | None = None  # restart -> first decision (see first_decisions)
    decisions: int = 0  # backlog decisions counted in drain_rate_msg_s
    latency_backlog_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class DlqSummary(RunSummary):
    """Dead letters: what was injected, and what the DLQ holds."""

    malformed_injected: int = 0
    malformed_in_dlq: int = 0
    poison_orders: int = 0
    poison_attempts: list[int] = field(default_factory=list)
    dlq_reasons: list[str] = field(default_factory=list)


@dataclass
class MalformedSummary(RunSummary):
    """Malformed messages: dead-lettered with a reason, and the consumer still consuming."""

    malformed_injected: int = 0
    malformed_in_dlq: int = 0
    without_reason: int = 0
    orders_after_malformed: int = 0
    notified_after_malformed: int = 0
    dlq_reasons: list[str] = field(default_factory=list)


@dataclass
class ReconnectSummary(RunSummary):
    """A broker restart mid-stream."""

    outage: str = "kill"
    gap_s: float = 0.0
    services_restarted: bool = False
    reconnects: dict[str, Any] = field(default_factory=dict)
    refused_503_then_retried: int = 0
    orders_refused_finally: int = 0
    # The second restart, while outcomes waited (harness.scenarios.held_outcomes): its
    # accepted orders (counted in orders_placed too), the outcomes that waited, or why not.
    held_orders: int = 0
    held_outcomes_waited: int = 0
    held_skipped: str | None = None


@dataclass
class DuplicatesSummary(RunSummary):
    """Republished orders: exact copies and copies with a new event_id."""

    restarted_first: bool = False
    originals: int = 0
    exact_copies_sent: int = 0
    new_id_copies_sent: int = 0
    reserved_twice: list[str] = field(default_factory=list)


@dataclass
class KillSummary(RunSummary):
    """kill -9 of a service while orders stream through it."""

    killed: str = "inventory"
    kills: int = 0


@dataclass
class IdempotencySummary(Summary):
    """Idempotency modes of the lab's inventory, compared."""

    scenario: str
    orders_per_case: int
    double_reservations: dict[str, int]
    duplicate_notifications: int
    lost: int
    stock_conserved: bool


@dataclass
class CrashWindowSummary(Summary):
    """Crash points of the lab's inventory, per idempotency mode."""

    scenario: str
    lost: dict[str, int]
    double_reservations: dict[str, int]
    sqlite_valid_at_every_point: bool
