"""Contract gaps on a grade card: found once, listed first, and the checks they leave unjudged.

A gap (a missing path, queue or exchange, another body shape) is a finding of its own. The
checks that needed what the gap hid are "not judged" (never a pass, never a guessed
failure); every other check keeps its verdict.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pika.exceptions

from harness.invariants import Check
from harness.lab.client import ContractGap, MissingPath
from harness.runner import GAPS_FILE, OBSERVED_FILE, QueueMissing

EVERYTHING = frozenset({"orders", "inventory", "ledger", "notifications", "dlq"})

# What each check reads from the run state. A check may also name it in evidence["needs"].
NEEDS: dict[str, frozenset[str]] = {
    "nothing lost": frozenset({"notifications"}),
    "no duplicate notification": frozenset({"notifications"}),
    "no double reservation": frozenset({"ledger"}),
    "stock conserved": frozenset({"inventory", "ledger"}),
    "no valid order dead-lettered": frozenset({"dlq"}),
    "malformed messages dead-lettered": frozenset({"dlq"}),
    "dead letters say why": frozenset({"dlq"}),
    "exact copy: not reserved twice": frozenset({"ledger"}),
    "copy with a new event_id: not reserved twice": frozenset({"ledger"}),
    "poison orders dead-lettered": frozenset({"dlq"}),
    "verdict": EVERYTHING,  # a scenario judged as a whole (chaos) reads everything
    # The outcome checks the invariants branch adds (by its names).
    "stock never below zero": frozenset({"inventory"}),
    "outcomes match the ledger": frozenset({"ledger"}),
    "ledger survives restarts": frozenset({"ledger"}),
    "FAILED exactly when stock is short": frozenset({"ledger", "orders"}),
    "a FAILED order stays FAILED": frozenset({"ledger"}),
    "stock ran short": frozenset({"ledger"}),
    # Read from the broker (redelivery counts, a tap on inventory_events): no gap hides them.
    "no poison loop": frozenset(),
    "one outcome per order": frozenset(),
    "poison order dead-lettered": frozenset({"dlq"}),
}

_AMQP_404 = re.compile(r"NOT_FOUND - no (queue|exchange) '([^']*)'")


def read_gaps(run_dir: Path | None) -> list[ContractGap]:
    """The gaps a scenario's Run wrote into its folder (none when it wrote none)."""
    path = run_dir / GAPS_FILE if run_dir else None
    if path is None or not path.exists():
        return []
    return [ContractGap(g["what"], g["detail"], tuple(g.get("blocks", ())))
            for g in json.loads(path.read_text())]


def read_observed(run_dir: Path | None) -> dict[str, Any]:
    """The optional features a scenario's Run saw in use (empty when it noted none)."""
    path = run_dir / OBSERVED_FILE if run_dir else None
    return json.loads(path.read_text()) if path is not None and path.exists() else {}


def gap_of(exc: BaseException) -> ContractGap | None:
    """The contract gap an exception out of a scenario shows, if it shows one."""
    if isinstance(exc, MissingPath):
        return exc.gap
    if isinstance(exc, QueueMissing):
        return ContractGap(str(exc).split(" does not exist")[0], "does not exist")
    if isinstance(exc, pika.exceptions.ChannelClosedByBroker) and exc.reply_code == 404:
        found = _AMQP_404.search(exc.reply_text or "")
        if found:
            return ContractGap(f"{found.group(1)} '{found.group(2)}'", "does not exist")
        return ContractGap("an AMQP name", exc.reply_text)
    return None


def unjudge(checks: list[Check], gaps: list[ContractGap]) -> list[Check]:
    """The checks, with those that needed what a gap hid turned into "not judged"."""
    hidden = {b: g for g in gaps for b in g.blocks}
    out = []
    for c in checks:
        needs = frozenset(c.evidence.get("needs") or NEEDS.get(c.name, ()))
        blocked = list(dict.fromkeys(hidden[n] for n in sorted(needs) if n in hidden))
        if not blocked:
            out.append(c)
            continue
        why = "; ".join(f"{g.what} {g.detail}" for g in blocked)
        out.append(Check(c.scenario, c.name, c.tried, c.expected,
                         f"not judged: it needs what a contract gap hides ({why})", None,
                         {"not_judged": True, "contract_gap": [g.what for g in blocked]},
                         c.chart))
    return out


def summarise(per_scenario: list[tuple[str, list[ContractGap], list[Check]]]
              ) -> list[dict[str, Any]]:
    """One entry per gap, in the order first met: what, detail, scenarios, unjudged checks."""
    merged: dict[str, dict[str, Any]] = {}
    for scenario, gaps, checks in per_scenario:
        for g in gaps:
            entry = merged.setdefault(g.what, {"what": g.what, "detail": g.detail,
                                               "scenarios": [], "checks_not_judged": []})
            if scenario not in entry["scenarios"]:
                entry["scenarios"].append(scenario)
            entry["checks_not_judged"] += [
                f"{c.scenario}: {c.name}" for c in checks
                if g.what in (c.evidence.get("contract_gap") or ())]
    return list(merged.values())
