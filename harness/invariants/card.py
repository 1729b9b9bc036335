"""The report card's rows: `Check`, the rows built from a verdict, and the card's verdict."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.invariants.record import ALWAYS, INVARIANTS, Verdict

# ---- the card's rows --------------------------------------------------------------------

PASSED, FAILED, INCOMPLETE = "PASSED", "FAILED", "INCOMPLETE"


@dataclass
class Check:
    """One row of a report card: what was tried, what was expected, what happened.

    `passed` is None when the check could not be run (a service never became healthy, a
    time-out): the card then says so instead of guessing. `cause` is the root cause found
    from the run's evidence (harness.grading.causes), so that the card lists one cause once with
    every check it broke; None when the check held or no evidence pointed anywhere.
    """

    scenario: str
    name: str
    tried: str
    expected: str
    happened: str
    passed: bool | None
    evidence: dict[str, Any] = field(default_factory=dict)
    chart: str | None = None  # a figure name of the scenario's result
    key: str | None = None  # the invariant's key, when the row is one of INVARIANTS
    cause: str | None = None  # a harness.grading.causes key

    def to_dict(self) -> dict[str, Any]:
        """The check as plain JSON-able data."""
        return {"scenario": self.scenario, "name": self.name, "tried": self.tried,
                "expected": self.expected, "happened": self.happened, "passed": self.passed,
                "evidence": self.evidence, "chart": self.chart, "key": self.key,
                "cause": self.cause}



# The bare fact of a broken invariant, for when a cause found from evidence explains it.
_FACT_ONLY = {"lost": "{n} orders answered 201 were never notified ({ids})",
              "valid_in_dlq": "{n} valid orders ended in the DLQ ({ids})",
              "double_reservations": "{n} orders reserved stock twice ({ids})",
              "duplicate_notifications": "{n} orders were notified more than once ({ids})"}


def invariant_checks(scenario: str, tried: str, verdict: Verdict, *,
                     hints: dict[str, str] | None = None, chart: str | None = None,
                     only: tuple[str, ...] | None = None) -> list[Check]:
    """One Check per invariant the verdict judged (or `only` these plus ALWAYS), worded
    for a student; a broken one says the cause its evidence points to."""
    from harness.grading.causes import explain
    keys = list(only) if only is not None else list(verdict.judged)
    keys += [k for k in ALWAYS if k not in keys]
    c = verdict.counts
    rows = []
    for key in keys:
        if key not in verdict.evidence:
            continue  # not judged in this run (no snapshot taken, nothing republished)
        inv = INVARIANTS[key]
        ids = inv.broken(verdict)
        cause = None
        if not ids:
            happened = inv.held_words(c)
        else:
            found = explain(key, ids, verdict.facts)
            if found is None:  # no evidence of a cause: the scenario's own question
                happened = inv.broken_words(ids, (hints or {}).get(key))
            else:  # the cause the evidence names replaces any fixed hint
                cause = found.key
                happened = (f"{inv.broken_words(ids, _FACT_ONLY.get(key))}. Evidence: "
                            f"{found.evidence}. Likely cause: {found.text}")
        rows.append(Check(scenario, inv.name, tried, inv.expected, happened, not ids,
                          {"order_ids": ids[:20], "orders_placed": c.get("orders_placed"),
                           "notified": c.get("notified")}, chart, key, cause))
    return rows


def _fault_scenario(name: str) -> bool:
    from harness.scenarios import registry
    try:
        sc = registry.get(name)
    except KeyError:
        return False
    return sc.needs_restartable_broker or sc.needs_cluster


def card_verdict(checks: list[Check]) -> str:
    """FAILED if a check failed; INCOMPLETE if a check could not run, or a fault scenario
    (one that restarts the broker or needs a cluster) or a check marked `incomplete` was
    skipped: the faults that catch most mistakes were never tried; else PASSED."""
    if any(c.passed is False for c in checks):
        return FAILED
    unjudged = [c for c in checks if c.passed is None]
    if any(not c.evidence.get("skipped") or c.evidence.get("incomplete")
           or _fault_scenario(c.scenario) for c in unjudged):
        return INCOMPLETE
    return PASSED
