"""Invariants of a run: ONE record per invariant, the checks every scenario and chaos share,
and the report card's rows built from them.

The record (what grade.py, summary.json and the chaos verdict read)::

    Invariant(key, name, expected, hint, held, evidence)
        key       the name in Verdict.counts and Verdict.evidence ("lost", "stock_negative")
        name      the check's name on the card ("nothing lost")
        expected  what a correct implementation does, in a line
        hint      default words when broken; str.format fields {n} {ids} {first}
        held      words when it holds; str.format fields from Verdict.counts
        evidence  the key of Verdict.evidence holding the ids (orders, items, queues) that
                  break it; equal to `key` for every invariant defined here
    INVARIANTS: dict[str, Invariant]        every invariant, by key (one place to add one)
    SHARED: tuple[str, ...]                 judged by check_run AND check_chaos alike
    ALWAYS: tuple[str, ...]                 on every scenario's card, whatever its `only=`
    register_invariant(Invariant) -> Invariant

A verdict carries, per judged key, the breaking ids: `Verdict.evidence[key] -> list[str]`
(empty: held), `Verdict.judged` (the keys it judged) and `Verdict.facts` (what the causes
read: DLQ copies, ledger, timeline, health, queues left). `Invariant.broken(verdict)` reads
them; `invariant_checks(scenario, tried, verdict, ...)` turns them into `Check` rows.

For the report card (harness/grading/grade.py):
    Check(..., key=<invariant key or None>, cause=<harness.grading.causes key or None>)
    card_verdict(checks) -> "PASSED" | "FAILED" | "INCOMPLETE"  (INCOMPLETE: a check could
        not run, or a fault scenario, or a check marked evidence["incomplete"], was skipped)
    harness.grading.causes.root_causes(checks) -> [(cause key, advice, [Check, ...])]: one
        root cause once, with every check it broke
summary.json holds "invariants" {key: {name, held, broken}} and "causes" (the same groups).

The package: `record` (Invariant, INVARIANTS, Verdict), `findings` (the pure checks and
`shared_findings`), `judge` (`check_run`), `card` (`Check`, the rows, `card_verdict`).
Adding an invariant: one `register_invariant(...)` and its finder in `findings.shared_findings`
(or in the chaos checker for chaos-only ones, or beside the scenario that judges it).
"""


from harness.invariants.card import (
    FAILED,
    INCOMPLETE,
    PASSED,
    Check,
    card_verdict,
    invariant_checks,
)
from harness.invariants.findings import (
    dlq_order_id,
    double_reservations,
    expected_outcomes,
    items_not_conserved,
    shared_findings,
    stock_conserved,
)
from harness.invariants.judge import check_run
from harness.invariants.record import (
    ALWAYS,
    INVARIANTS,
    SHARED,
    Invariant,
    Verdict,
    register_invariant,
)

__all__ = ["ALWAYS", "FAILED", "INCOMPLETE", "INVARIANTS", "PASSED", "SHARED", "Check", "Invariant",
           "Verdict", "card_verdict", "check_run", "dlq_order_id", "double_reservations",
           "expected_outcomes", "invariant_checks", "items_not_conserved", "register_invariant",
           "shared_findings", "stock_conserved"]
