"""A scenario judged as a whole (chaos) turned into one card row per invariant.

Each row is judged on its own, so that a contract gap or a missing optional feature takes
away only the rows that needed it: the rest keep their verdict.
"""

from __future__ import annotations

from typing import Any

from harness.invariants import Check, Verdict

# key: (check name, expected, what it reads from the run state, words of its problem)
ROWS: dict[str, tuple[str, str, frozenset[str], str]] = {
    "lost": ("nothing lost", "every accepted order notified exactly once",
             frozenset({"notifications"}), "without exactly one notification"),
    "reserved_twice": ("no double reservation", "each order's stock taken once, and the "
                       "stock agreeing with the ledger and the outcomes",
                       frozenset({"ledger", "inventory"}), "reserved twice|stock"),
    "duplicate_orders": ("one order per client request", "a retried request (same "
                         "Idempotency-Key) never becomes two orders", frozenset({"orders"}),
                         "became two orders"),
    "ghosts_unaccepted": ("no ghost orders", "every processed order was accepted",
                          frozenset({"ledger", "notifications"}), "never accepted"),
    "ghosts_404": ("accepted orders kept", "every accepted order is returned by "
                   "GET /order/<id>, also after a crash", frozenset(), "not returned by GET"),
    "status_mismatch": ("order status follows the outcome", "GET /order/<id> says what the "
                        "notification says (optional: consuming order_status)",
                        frozenset({"notifications"}), "GET status disagrees"),
    "malformed_not_dead_lettered": ("malformed messages dead-lettered with a reason",
                                    "every malformed message in the DLQ with a reason",
                                    frozenset({"dlq"}), "malformed messages not in the DLQ"),
    "stalled_queues": ("queues drained", "no queue left holding messages while its consumer "
                       "says it is healthy", frozenset(), "queues not drained"),
    "unhealthy_services": ("services healthy at the end", "every service answers its health "
                           "path after the faults", frozenset(), "not healthy at the end"),
    "http_5xx": ("no server errors", "no 5xx answer but the contract's 503 while the broker "
                 "is away", frozenset(), "were 5xx"),
    "client_errors": ("valid orders not refused", "no 4xx for a valid order",
                      frozenset(), "answered 4xx"),
    "gave_up": ("orders accepted within the client's bound", "every request accepted "
                "(201/202) within its retries", frozenset(), "never accepted"),
}


def _problem(verdict: Verdict, words: str) -> str | None:
    return next((p for p in verdict.problems if any(w in p for w in words.split("|"))), None)


def split(scenario: str, tried: str, verdict: Verdict, summary: Any,
          observed: dict[str, Any]) -> list[Check] | None:
    """One Check per invariant of a whole-run verdict, or None if it has no such counts."""
    c = verdict.counts
    if not all(k in c for k in ROWS):
        return None
    # Updating an order's status is optional: judged only where it was seen in use.
    answers = {str(k): int(v) for k, v in (c.get("answers") or {}).items()}
    no_status = observed.get("status_updates") is not True
    queues_left = dict((summary or {}).get("queues_left") or {}) if hasattr(
        summary, "get") else {}
    rows = []
    for key, (name, expected, needs, words) in ROWS.items():
        n = c[key]
        happened = _problem(verdict, words) if n else None
        evidence: dict[str, Any] = {"needs": sorted(needs), key: n}
        if key == "http_5xx":
            # The contract's 503 ("not now, retry") is an answer, not a fault.
            n = sum(v for s, v in answers.items() if s.startswith("5") and s != "503")
            evidence.update({"answers_5xx": {s: v for s, v in answers.items()
                                             if s.startswith("5")}})
            happened = (f"{n} answers were a 5xx other than the contract's 503: "
                        f"{evidence['answers_5xx']}" if n else None)
        if key == "status_mismatch" and no_status:
            rows.append(Check(scenario, name, tried, expected, "skipped: the order service "
                              "never updates an order's status (consuming order_status is "
                              "optional in the contract)", None,
                              {"skipped": True, "needs": sorted(needs)}))
            continue
        if key == "stalled_queues" and no_status:
            stalled = {q: v for q, v in queues_left.items()
                       if v and not q.startswith("order_status")}
            n = 1 if stalled and c[key] else 0
            happened = f"queues not drained: {stalled}" if n else None
        rows.append(Check(scenario, name, tried, expected,
                          happened or (f"{key.replace('_', ' ')}: {n}" if n
                                       else f"none found ({key.replace('_', ' ')}: 0)"),
                          not n, evidence))
    return rows
