"""The shared checks, pure functions of what a run recorded: each finds the ids that break
one invariant, and `shared_findings` runs them all for scenarios and chaos alike."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

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
