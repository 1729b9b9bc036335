"""The invariant record: one `Invariant` per check every checker shares, and the `Verdict`
that carries, per invariant, the ids breaking it."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Invariant:
    """One invariant: how the card names it, what it expects, and how it explains itself."""

    key: str
    name: str
    expected: str
    hint: str
    held: str
    evidence: str = ""

    @property
    def evidence_key(self) -> str:
        """The key of Verdict.evidence that holds the ids breaking this invariant."""
        return self.evidence or self.key

    def broken(self, verdict: Verdict) -> list[str]:
        """The ids that break this invariant in a verdict (empty when it holds)."""
        return list(verdict.evidence.get(self.evidence_key, []))

    def held_words(self, counts: dict[str, Any]) -> str:
        """The card's words when the invariant holds."""
        return self.held.format_map(defaultdict(lambda: "?", counts))

    def broken_words(self, ids: list[str], hint: str | None = None) -> str:
        """The card's words when it breaks: the hint filled with the breaking ids."""
        return (hint or self.hint).format(n=len(ids), ids=_ids(ids),
                                          first=ids[0] if ids else "")


INVARIANTS: dict[str, Invariant] = {}


def register_invariant(inv: Invariant) -> Invariant:
    """Add an invariant to the record (replacing one with the same key)."""
    INVARIANTS[inv.key] = inv
    return inv


for _inv in (
    Invariant("lost", "nothing lost", "every order answered 201 is notified",
              "{n} orders answered 201 were never notified ({ids}): an accepted order must "
              "reach its notification",
              "all {orders_placed} accepted orders were notified"),
    Invariant("duplicate_notifications", "no duplicate notification", "one notification per order",
              "{n} orders were notified more than once ({ids}): the notification service must "
              "ignore a repeated outcome", "no order was notified twice"),
    Invariant("double_reservations", "no double reservation", "each order's stock is reserved once",
              "{n} orders reserved stock twice ({ids}): the inventory must reserve each order "
              "once, however often it arrives", "no order was reserved twice"),
    Invariant("stock_conserved", "stock conserved", "initial - reserved == current, for every item",
              "the stock does not add up for {ids}: initial stock minus everything in the "
              "reservation ledger differs from the current stock",
              "the stock adds up for every item"),
    Invariant("stock_negative", "stock never below zero", "no item's stock goes below zero",
              "the stock of {ids} went below zero: the inventory reserved more than it had "
              "(check the stock before reserving, in the same transaction)",
              "no item's stock went below zero"),
    Invariant("outcomes_vs_ledger", "outcomes match the ledger",
              "an order is RESERVED iff the ledger holds its lines (all of them), FAILED iff "
              "it holds none",
              "{n} orders' outcomes disagree with the reservation ledger ({ids}): a RESERVED "
              "order must hold every line's stock and a FAILED one none",
              "every outcome matches the reservation ledger"),
    Invariant("valid_in_dlq", "no valid order dead-lettered", "the DLQ holds no valid order",
              "{n} valid orders ended in the DLQ ({ids}): only bad messages belong there",
              "no valid order in the DLQ"),
    Invariant("ledger_forgot", "ledger survives restarts",
              "every reservation seen before a kill or restart is still in the ledger after it",
              "{n} orders reserved before a kill or restart are missing from the ledger after "
              "it ({ids}): the reservation ledger must be durable",
              "every reservation seen before a kill was still there after it"),
    Invariant("failed_flipped", "a FAILED order stays FAILED",
              "republishing a FAILED order changes nothing",
              "{n} FAILED orders changed outcome when their OrderPlaced arrived again ({ids}): "
              "a duplicate must get the outcome already decided, not a new one",
              "every republished FAILED order stayed FAILED"),
    Invariant("failed_iff_short", "FAILED exactly when stock is short",
              "an order fails iff one of its lines asks for more than is left, all or nothing",
              "{n} orders got an outcome the stock did not call for ({ids}): reserve an order "
              "iff every line fits, and then all of its lines",
              "every order failed exactly when its stock ran short"),
):
    register_invariant(_inv)

# Judged by check_run for every scenario, and by the chaos checker through the same functions.
SHARED = ("lost", "duplicate_notifications", "double_reservations", "stock_conserved",
          "stock_negative", "outcomes_vs_ledger", "valid_in_dlq", "ledger_forgot",
          "failed_flipped", "failed_iff_short")
# On every scenario's card whatever its `only=`: they close false passes in every scenario.
ALWAYS = ("stock_negative", "failed_iff_short", "outcomes_vs_ledger", "valid_in_dlq",
          "ledger_forgot")


@dataclass
class Verdict:
    """`valid` true or false, with the counts that justify it and the problems found."""

    valid: bool
    counts: dict[str, Any]
    problems: list[str] = field(default_factory=list)
    # Invariant key -> the ids (orders, items, queues) that break it: the card's evidence.
    evidence: dict[str, list[str]] = field(default_factory=dict)
    # Facts about the breaking orders (DLQ reasons, ledger rows, kills): causes read them.
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def judged(self) -> list[str]:
        """The invariant keys this verdict judged."""
        return [k for k in self.evidence if k in INVARIANTS]

    def to_dict(self) -> dict[str, Any]:
        """The verdict as plain JSON-able data."""
        return {"valid": self.valid, **self.counts, "problems": self.problems,
                "broken": {k: v[:20] for k, v in self.evidence.items() if v}}

    def __str__(self) -> str:
        head = "VALID" if self.valid else "INVALID"
        return head + (": " + "; ".join(self.problems) if self.problems else "")


def _ids(ids: list[str], limit: int = 5) -> str:
    shown = ", ".join(str(i) for i in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")
