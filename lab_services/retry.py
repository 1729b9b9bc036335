"""Retry policies: where a message waits before its next attempt, and when to give up.

A handler that fails on a message does not requeue it (that is a hot loop): the message is
republished to a delay queue of its tier, whose TTL sends it back to the work queue. After
the last tier it is dead-lettered. The tiers grow exponentially (200, 800, 3200 ms: x4).
"""

from __future__ import annotations

from dataclasses import dataclass

from lab_services import topology


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Retry tiers for one work queue: delay queues in order, and a bound on attempts.

    The delays themselves are the tier queues' TTLs (`topology.RETRY_DELAYS_MS`, declared with
    the topology), so a policy chooses only how many of the tiers a message may use.
    """

    queue: str
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        if self.max_attempts is not None and self.max_attempts < 0:
            raise ValueError("max_attempts must be >= 0")

    @property
    def tiers(self) -> int:
        """How many retries a message gets before it is dead-lettered."""
        limit = len(topology.RETRY_DELAYS_MS)
        return limit if self.max_attempts is None else min(limit, self.max_attempts)

    def next_queue(self, attempts: int) -> str | None:
        """The delay queue for a message that has now failed `attempts` times, or None."""
        if 1 <= attempts <= self.tiers:
            return topology.retry_queue(attempts, self.queue)
        return None


NO_RETRY = RetryPolicy(queue="", max_attempts=0)


def backoff_s(failures: int, *, initial: float = 0.1, cap: float = 5.0) -> float:
    """Capped exponential backoff after `failures` consecutive failures (0 means none).

    The one backoff of the services: the bus's reconnects, requeues after a failed commit
    or an undeliverable copy, and the store's wait for a file another process holds.
    """
    if failures <= 0:
        return 0.0
    # The exponent is bounded: a float cannot hold 2 ** 1100, and the cap is long reached.
    return min(initial * 2 ** min(failures - 1, 64), cap)
