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

Adding an invariant: one `register_invariant(...)` and its finder in `shared_findings` (or in
the chaos checker for chaos-only ones).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
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


# ---- the shared checks (pure) -------------------------------------------------------------


def _wanted(items: list[dict[str, Any]]) -> Counter[str]:
    """An order's quantity per item (two lines of one item add up)."""
    want: Counter[str] = Counter()
    for line in items:
        want[line["item_id"]] += int(line["quantity"])
    return want


def double_reservations(reservations: list[dict[str, Any]],
                        orders: list[dict[str, Any]] | None = None) -> dict[str, int]:
    """Orders whose stock was taken more than once: order id -> times reserved.

    With the orders (GET /orders), an order whose ledger rows for an item add up to no more
    than it asked for is reserved once, however many rows it took (one per line is fine).
    """
    per_order_item = Counter((r["order_id"], r["item_id"]) for r in reservations)
    taken: Counter[tuple[str, str]] = Counter()
    for r in reservations:
        taken[(r["order_id"], r["item_id"])] += int(r["quantity"])
    wanted = {o["order_id"]: _wanted(o["items"]) for o in orders or [] if o.get("items")}
    times: dict[str, int] = {}
    for (order_id, item), n in per_order_item.items():
        if order_id in wanted and wanted[order_id].get(item):
            # Reserved k times over when the rows hold k times the quantity asked for.
            n = taken[(order_id, item)] // wanted[order_id][item]
        if n > 1:
            times[order_id] = max(times.get(order_id, 0), n)
    return times


def items_not_conserved(inventory: dict[str, Any], reservations: list[dict[str, Any]]) -> list[str]:
    """Items whose initial stock - everything reserved differs from the current stock."""
    taken: Counter[str] = Counter()
    for r in reservations:
        taken[r["item_id"]] += int(r["quantity"])
    return sorted(k for k, v in inventory.items() if v["initial"] - taken.get(k, 0) != v["stock"])


def stock_conserved(inventory: dict[str, Any], reservations: list[dict[str, Any]]) -> bool:
    """True iff for every item: initial stock - everything reserved == current stock."""
    return not items_not_conserved(inventory, reservations)


def items_below_zero(inventory: dict[str, Any]) -> list[str]:
    """Items whose stock is below zero (oversold)."""
    return sorted(k for k, v in inventory.items() if v.get("stock", 0) < 0)


def outcomes_vs_ledger(ledger: dict[str, Any], orders: list[dict[str, Any]] | None = None,
                       notifications: list[dict[str, Any]] | None = None) -> list[str]:
    """Orders whose outcome disagrees with the ledger: RESERVED with no (or not every) line,
    FAILED with some line; and orders notified RESERVED that the ledger has no line of."""
    lines: dict[str, Counter[str]] = defaultdict(Counter)
    for r in ledger.get("reservations", []):
        lines[r["order_id"]][r["item_id"]] += int(r["quantity"])
    items_of = {o["order_id"]: o.get("items") for o in orders or []}
    bad = set()
    for outcome in ledger.get("outcomes", []):
        oid, reserved = outcome["order_id"], outcome.get("reserved")
        if reserved is False and lines.get(oid):
            bad.add(oid)
        elif reserved is True:
            if not lines.get(oid):
                bad.add(oid)
            elif items_of.get(oid):
                wanted = _wanted(items_of[oid])
                # A line reserved twice is double_reservations' finding, not this one.
                if set(wanted) != set(lines[oid]) or any(
                        lines[oid][i] < q for i, q in wanted.items()):
                    bad.add(oid)
    for note in notifications or []:
        if note.get("status") == "RESERVED" and not lines.get(note["order_id"]):
            bad.add(note["order_id"])
    return sorted(bad)


def dlq_order_id(message: dict[str, Any]) -> str | None:
    """The order id in a dead-lettered message's JSON body, if it has one."""
    try:
        body = json.loads(message["body"])
    except (ValueError, TypeError, KeyError, RecursionError):  # hostile bodies are data
        return None
    oid = body.get("order_id") if isinstance(body, dict) else None
    return oid if isinstance(oid, str) else None


def valid_in_dlq(dlq: list[dict[str, Any]], accepted: Iterable[str],
                 expected_dead: Iterable[str] = ()) -> list[str]:
    """Accepted orders found in the DLQ that were not meant to die there."""
    wanted, dead = set(accepted), set(expected_dead)
    return sorted({o for o in map(dlq_order_id, dlq) if o in wanted} - dead)


def ledger_forgotten(snapshots: list[list[dict[str, Any]]],
                     reservations: list[dict[str, Any]]) -> list[str]:
    """Orders with a ledger line in a snapshot (taken before a kill) missing at the end."""
    now = {(r["order_id"], r["item_id"]) for r in reservations}
    return sorted({r["order_id"] for snap in snapshots for r in snap
                   if (r["order_id"], r["item_id"]) not in now})


def flipped_failed(must_stay_failed: Iterable[str], ledger: dict[str, Any],
                   orders: list[dict[str, Any]] | None = None) -> list[str]:
    """Orders once FAILED that the ledger or GET /order now calls reserved."""
    reserved = {o["order_id"] for o in ledger.get("outcomes", []) if o.get("reserved") is True}
    reserved |= {r["order_id"] for r in ledger.get("reservations", [])}
    status = {o["order_id"]: o.get("status") for o in orders or []}
    return sorted(o for o in set(must_stay_failed)
                  if o in reserved or status.get(o, "FAILED") != "FAILED")


def expected_outcomes(placed: list[dict[str, Any]], initial: dict[str, int]) -> dict[str, bool]:
    """Order id -> reserved? for orders handled one at a time in this order, all or nothing."""
    stock = dict(initial)
    out = {}
    for order in placed:
        want = _wanted(order["items"])
        fits = all(stock.get(i, 0) >= q for i, q in want.items())
        if fits:
            for i, q in want.items():
                stock[i] -= q
        out[order["order_id"]] = fits
    return out


def wrong_outcomes(expected: dict[str, bool], ledger: dict[str, Any],
                   notifications: list[dict[str, Any]] | None = None) -> list[str]:
    """Orders whose outcome is not the one the stock called for (or missing): the outcome
    the notification said, else the ledger's."""
    got = {o["order_id"]: o.get("reserved") for o in ledger.get("outcomes", [])}
    for n in notifications or []:
        if n.get("status") in ("RESERVED", "FAILED"):
            got[n["order_id"]] = n["status"] == "RESERVED"
    return sorted(o for o, want in expected.items() if got.get(o) is not want)


def failed_with_stock(ledger: dict[str, Any], orders: list[dict[str, Any]],
                      inventory: dict[str, Any],
                      notifications: list[dict[str, Any]] | None = None) -> list[str]:
    """FAILED orders every line of which fits in the stock left at the END: stock only goes
    down, so it fitted when the order was handled too, and the order should have been
    reserved (an unknown item counts as short)."""
    failed = {o["order_id"] for o in ledger.get("outcomes", []) if o.get("reserved") is False}
    failed |= {n["order_id"] for n in notifications or [] if n.get("status") == "FAILED"}
    out = []
    for order in orders:
        if order["order_id"] in failed and order.get("items"):
            want = _wanted(order["items"])
            if all(i in inventory and int(inventory[i].get("stock", 0)) >= q
                   for i, q in want.items()):
                out.append(order["order_id"])
    return sorted(out)


def shared_findings(*, accepted: list[str], inventory: dict[str, Any],
                    ledger: dict[str, Any] | None,
                    notifications: list[dict[str, Any]], dlq: list[dict[str, Any]],
                    orders: list[dict[str, Any]] | None = None,
                    expected_dead: Iterable[str] = (),
                    ledger_snapshots: list[list[dict[str, Any]]] | None = None,
                    must_stay_failed: Iterable[str] = (),
                    expected: dict[str, bool] | None = None) -> dict[str, list[str]]:
    """Every SHARED invariant's breaking ids, judged the one way both checkers use.

    An invariant whose evidence could not be read is left out, not passed: without a ledger
    (None, or no "reservations": GET /reservations missing) nothing that reads the ledger,
    without an inventory ({}: GET /inventory missing) nothing that reads the stock.
    """
    dead = set(expected_dead)
    has_ledger = isinstance(ledger, dict) and isinstance(ledger.get("reservations"), list)
    ledger = ledger if has_ledger else {"reservations": [], "outcomes": []}
    reservations = ledger["reservations"]
    note_ids = [n["order_id"] for n in notifications]
    found = {
        "lost": sorted({o for o in accepted if o not in dead} - set(note_ids)),
        "duplicate_notifications": sorted(o for o, n in Counter(note_ids).items() if n > 1),
        "double_reservations": sorted(double_reservations(reservations, orders)),
        "stock_conserved": items_not_conserved(inventory, reservations),
        "stock_negative": items_below_zero(inventory),
        "outcomes_vs_ledger": outcomes_vs_ledger(
            ledger, orders, [n for n in notifications if n["order_id"] not in dead]),
        "valid_in_dlq": valid_in_dlq(dlq, accepted, dead),
        "ledger_forgot": ledger_forgotten(ledger_snapshots or [], reservations),
        "failed_flipped": flipped_failed(must_stay_failed, ledger, orders),
        "failed_iff_short": (wrong_outcomes(expected, ledger, notifications) if expected
                             else failed_with_stock(ledger, orders or [], inventory,
                                                    notifications)),
    }
    if not has_ledger:
        for key in ("double_reservations", "stock_conserved", "outcomes_vs_ledger",
                    "ledger_forgot", "failed_flipped"):
            found.pop(key)
    if not inventory:
        found.pop("stock_conserved", None)
        found.pop("stock_negative")
        if not expected:
            found.pop("failed_iff_short")
    elif not expected and not orders:
        found.pop("failed_iff_short")  # without the orders' lines there is nothing to compare
    return found


def check_run(
    *,
    accepted: list[str],
    inventory: dict[str, Any],
    ledger: dict[str, Any] | None,
    notifications: list[dict[str, Any]],
    dlq: list[dict[str, Any]],
    malformed_injected: int = 0,
    expected_dead: set[str] | None = None,
    allow_double_reservations: bool = False,
    orders: list[dict[str, Any]] | None = None,
    ledger_snapshots: list[list[dict[str, Any]]] | None = None,
    must_stay_failed: Iterable[str] = (),
    expected: dict[str, bool] | None = None,
    facts: dict[str, Any] | None = None,
) -> Verdict:
    """Judge a run from what the API accepted and what the services and the DLQ hold.

    `expected_dead` are order ids deliberately made to fail (poison messages): they belong
    in the DLQ, not among the notified. With `allow_double_reservations` a run that shows a
    naive design's double reservation is still judged on the other invariants (the
    scenario's own teaching point then checks the count). `orders` (GET /orders) lets the
    outcomes be compared line by line; `ledger_snapshots` are GET /reservations rows taken
    before each kill; `must_stay_failed` are FAILED orders that were republished;
    `expected` is each order's outcome as the stock calls for it (stock-exhaustion).
    """
    expected_dead = expected_dead or set()
    found = shared_findings(accepted=accepted, inventory=inventory, ledger=ledger,
                            notifications=notifications, dlq=dlq, orders=orders,
                            expected_dead=expected_dead, ledger_snapshots=ledger_snapshots,
                            must_stay_failed=must_stay_failed, expected=expected)
    ledger = ledger if isinstance(ledger, dict) else {}
    reservations = ledger.get("reservations") or []
    notified_ids = [n["order_id"] for n in notifications]
    notified = set(notified_ids)
    dlq_ids = [dlq_order_id(m) for m in dlq]
    malformed_in_dlq = sum(1 for o in dlq_ids if not (o in set(accepted) or o in expected_dead))
    dead_found = sorted({o for o in dlq_ids if o in expected_dead})
    outcomes = {o["order_id"]: o for o in ledger.get("outcomes", [])}
    doubles = double_reservations(reservations, orders)
    counts = {
        "orders_placed": len(accepted),
        "reserved": sum(1 for o in accepted if outcomes.get(o, {}).get("reserved") is True),
        "failed": sum(1 for o in accepted if outcomes.get(o, {}).get("reserved") is False),
        "notified": len(notified & set(accepted)),
        "notified_unaccepted": len(notified - set(accepted)),
        "dlq_messages": len(dlq),
        "malformed_injected": malformed_injected,
        "malformed_in_dlq": malformed_in_dlq,
        "valid_orders_in_dlq": len(found["valid_in_dlq"]),
        "expected_dead_letters": len(expected_dead),
        "dead_letters_found": len(dead_found),
        "lost": len(found["lost"]),
        "duplicate_notifications": sum(n - 1 for n in Counter(notified_ids).values() if n > 1),
        "double_reservations": len(doubles),
        # None: not judged (the inventory or the ledger could not be read).
        "stock_conserved": (not found["stock_conserved"]) if "stock_conserved" in found
        else None,
        "stock_negative": len(found.get("stock_negative", [])),
        "outcomes_vs_ledger": len(found.get("outcomes_vs_ledger", [])),
        "ledger_forgot": len(found.get("ledger_forgot", [])),
        "failed_flipped": len(found.get("failed_flipped", [])),
        "failed_iff_short": len(found.get("failed_iff_short", [])),
    }
    judged = dict(found)
    if allow_double_reservations:
        judged.pop("double_reservations", None)
    if not ledger_snapshots:
        judged.pop("ledger_forgot", None)
    if not must_stay_failed:
        judged.pop("failed_flipped", None)

    problems = [f"{INVARIANTS[k].name}: {INVARIANTS[k].broken_words(ids)}"
                for k, ids in judged.items() if ids]
    if malformed_in_dlq != malformed_injected:
        problems.append(f"DLQ holds {malformed_in_dlq} malformed messages, "
                        f"{malformed_injected} were injected")
    if len(dead_found) != len(expected_dead):
        problems.append(f"{len(expected_dead) - len(dead_found)} poison orders missing "
                        "from the DLQ")
    all_facts = {"dlq": dlq, "ledger": ledger, "notifications": notifications,
                 "inventory": inventory,
                 **(facts or {})}
    return Verdict(not problems, counts, problems, judged, all_facts)


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


def _ids(ids: list[str], limit: int = 5) -> str:
    shown = ", ".join(str(i) for i in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


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
