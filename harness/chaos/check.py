"""The chaos checker: from what clients saw and what the services hold, valid or not.

Pure: it judges a `ChaosObservation` (plain data gathered after the run) and returns a
`Verdict` whose counts go into summary.json. The invariants every scenario shares (lost,
duplicate notifications, double reservations, stock conserved and never below zero,
outcomes vs the ledger, valid orders in the DLQ, the ledger kept across kills) are judged
by `harness.invariants.shared_findings`, the one checker both use; the chaos-only ones,
registered in the same record (`harness.invariants.INVARIANTS`), are:

- duplicate_orders:  one client request (one Idempotency-Key) that became two order ids
- ghosts:            processed (notified, reserved or given an outcome) but never accepted,
                     or accepted and then not returned by GET /order/<id> (404 or no answer)
- status_mismatch:   GET /order/<id> status disagreeing with the notification
- malformed_not_dead_lettered: an injected malformed message not in the DLQ with a reason
- stalled_queues:    a queue not back to 0 after the last fault while its consumer's
                     /health says ok; unhealthy_services: a service not healthy at the end
- http_5xx:          any 5xx answer; client_errors: a 4xx (but 409, "in progress, retry")
                     for a valid order;
  gave_up:           a request never accepted within the client's retry bound
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from harness.chaos.messages import tag_of
from harness.invariants import (
    INVARIANTS,
    Invariant,
    Verdict,
    dlq_order_id,
    items_not_conserved,
    register_invariant,
    shared_findings,
)
from harness.scenarios.loops import poison_loops
from lab_services.topology import OPTIONAL_QUEUES, owner_of

for _inv in (
    Invariant("duplicate_orders", "one order per request",
              "one client request (one Idempotency-Key) becomes one order",
              "{n} client requests became two orders ({ids}): honour the Idempotency-Key",
              "no request became two orders"),
    Invariant("ghosts", "no ghost orders",
              "only accepted orders are processed, and GET /order returns every one",
              "{n} orders were processed without being accepted, or accepted and not returned "
              "by GET /order ({ids})", "every processed order was accepted and can be read"),
    Invariant("status_mismatch", "status matches the notification",
              "GET /order/<id> says what the notification said",
              "{n} orders' GET status disagrees with their notification ({ids}): consume "
              "order_status and store the outcome", "every status matches its notification"),
    Invariant("malformed_not_dead_lettered", "malformed messages dead-lettered",
              "every injected malformed message reaches the DLQ with a reason",
              "{n} malformed messages are not in the DLQ with a reason ({ids})",
              "every malformed message is in the DLQ with a reason"),
    Invariant("stalled_queues", "queues drained", "every queue back to 0 after the faults",
              "queues not drained while their consumer says ok: {ids}", "every queue drained"),
    Invariant("unhealthy_services", "services healthy at the end",
              "every service answers /health after the faults",
              "services not healthy at the end: {ids}", "every service was healthy at the end"),
    Invariant("http_5xx", "no 5xx answers", "no request answered 5xx (503 'retry' aside)",
              "{n} answers were 5xx ({ids})", "no answer was 5xx"),
    Invariant("client_errors", "valid orders not refused", "no valid order answered 4xx",
              "{n} valid orders were answered 4xx ({ids})", "no valid order was answered 4xx"),
    Invariant("gave_up", "every request accepted in time",
              "every request accepted within the client's retry bound",
              "{n} requests were never accepted within the client's bound ({ids})",
              "every request was accepted within the client's bound"),
    Invariant("poison_not_dead_lettered", "poison order dead-lettered",
              "an order whose handling always fails ends in the DLQ with a reason",
              "{n} poison orders are not in the DLQ with a reason ({ids}): count a message's "
              "attempts and dead-letter it with its reason once they run out",
              "every poison order is in the DLQ with a reason"),
):
    register_invariant(_inv)

# What the chaos verdict judges, in the order of its table: the shared ones first.
JUDGED = ("lost", "duplicate_notifications", "double_reservations", "stock_conserved",
          "stock_negative", "failed_iff_short", "outcomes_vs_ledger", "valid_in_dlq",
          "ledger_forgot", "duplicate_orders", "ghosts", "status_mismatch",
          "malformed_not_dead_lettered", "stalled_queues", "unhealthy_services", "http_5xx",
          "client_errors", "gave_up", "poison_not_dead_lettered", "poison_loop")


@dataclass
class ClientRequest:
    """What one client saw for one order: every answer to every attempt of one key."""

    key: str
    user_id: str
    items: list[dict[str, Any]]
    statuses: list[int | None]  # one per attempt; None = no answer (connection error)
    order_ids: list[str]  # order ids in 201/202 answers, in order

    @property
    def accepted(self) -> bool:
        """True if any attempt was answered 201 or 202."""
        return any(s in (201, 202) for s in self.statuses)


@dataclass
class ChaosObservation:
    """Everything the checker needs, gathered after the run settled."""

    requests: list[ClientRequest]
    server_orders: list[dict[str, Any]]  # GET /orders
    lookups: dict[str, int | dict[str, Any]]  # order id -> GET /order/<id> body, or status
    notifications: list[dict[str, Any]]
    inventory: dict[str, dict[str, Any]]
    ledger: dict[str, Any]  # GET /reservations
    dlq: list[dict[str, Any]]  # harness.amqp.read_queue rows
    malformed_tags: set[str]
    queues_left: dict[str, int]  # queue -> messages (ready + unacked) at the drain bound
    health: dict[str, dict[str, Any] | None]  # service -> /health body, None if not ok
    extra: dict[str, Any] = field(default_factory=dict)
    # GET /reservations rows taken before each kill or restart (harness.faults).
    ledger_snapshots: list[list[dict[str, Any]]] = field(default_factory=list)
    # The run's timeline rows and what else the causes read (harness.grading.causes).
    facts: dict[str, Any] = field(default_factory=dict)
    # The schedule's poison orders: order id -> kind (harness.chaos.schedule.POISON).
    poison: dict[str, str] = field(default_factory=dict)
    # Queue -> (redelivered, messages left) from the management API; empty: not judged.
    redeliveries: dict[str, tuple[int, int]] = field(default_factory=dict)
    # Consumers of order_status at the end (None: unknown or no such queue): a consumer there
    # says the order service takes status updates, even if none ever reached it.
    status_consumers: int | None = None


def check_chaos(obs: ChaosObservation) -> Verdict:
    """Judge a chaos run: the shared invariants, then the chaos-only ones; valid iff no
    invariant has an id that breaks it."""
    accepted = {oid for r in obs.requests if r.accepted for oid in r.order_ids}
    notes_per_order = Counter(n["order_id"] for n in obs.notifications)
    notified_status = {n["order_id"]: n.get("status") for n in obs.notifications}
    reservations = obs.ledger.get("reservations", [])

    found = shared_findings(accepted=sorted(accepted), inventory=obs.inventory,
                            ledger=obs.ledger, notifications=obs.notifications, dlq=obs.dlq,
                            orders=obs.server_orders, ledger_snapshots=obs.ledger_snapshots,
                            expected_dead=set(obs.poison))
    found.pop("failed_flipped", None)
    if not obs.ledger_snapshots:
        found.pop("ledger_forgot", None)

    key_of_user = {r.user_id: r.key for r in obs.requests}
    ids_per_key: dict[str, set[str]] = defaultdict(set)
    for r in obs.requests:
        ids_per_key[r.key].update(r.order_ids)
    for o in obs.server_orders:
        key = key_of_user.get(o.get("user_id"))
        if key is not None:
            ids_per_key[key].add(o["order_id"])
    duplicate_keys = {k for k, ids in ids_per_key.items() if len(ids) > 1}

    processed = (set(notes_per_order)
                 | {r["order_id"] for r in reservations}
                 | {r["order_id"] for r in obs.ledger.get("outcomes", [])})
    ghost_unaccepted = processed - accepted
    # Accepted, yet GET /order/<id> does not return it: 404, or no order at all.
    ghost_404 = {o for o in accepted if not isinstance(obs.lookups.get(o), dict)}

    # The order service may leave order_status unconsumed (the contract calls it optional):
    # then no order it returns ever leaves PENDING, and neither the statuses nor that queue's
    # backlog are findings. One order it did update shows that it consumes.
    looked_up = [v for v in obs.lookups.values() if isinstance(v, dict)]
    status_consumed = (not looked_up or bool(obs.status_consumers)
                       or any(v.get("status") not in (None, "PENDING") for v in looked_up))
    mismatched = set()
    for o in accepted if status_consumed else ():
        looked = obs.lookups.get(o)
        if isinstance(looked, dict) and o in notified_status \
                and looked.get("status") != notified_status[o]:
            mismatched.add(o)

    dead_tags = Counter(tag_of(m) for m in obs.dlq if m.get("reason"))
    not_dead = obs.malformed_tags - set(dead_tags)

    stalled = {q: n for q, n in obs.queues_left.items()
               if n and owner_of(q) and obs.health.get(owner_of(q)) is not None
               and (status_consumed or q.split(".retry.")[0] not in OPTIONAL_QUEUES)}
    unhealthy = sorted(s for s, h in obs.health.items() if h is None)

    answers = Counter(s for r in obs.requests for s in r.statuses)
    # 503 is the contract's "not now, retry" while the broker is away: the client retries,
    # and an order that never got through is `gave_up`'s finding, not a 5xx one.
    five = {s: n for s, n in answers.items() if s is not None and s >= 500 and s != 503}
    # 409 is the Idempotency-Key protocol's "an attempt with this key is still in progress,
    # retry": the client does, so it is no error; any other 4xx for a valid order is.
    refused = [r.key for r in obs.requests
               for s in r.statuses if s is not None and 400 <= s < 500 and s != 409]
    gave_up = [r.key for r in obs.requests if not r.accepted]
    dead_poison = {dlq_order_id(m) for m in obs.dlq if m.get("reason")}

    found.update({
        "duplicate_orders": [f"{k}: {sorted(ids_per_key[k])}" for k in sorted(duplicate_keys)],
        "ghosts": sorted(ghost_unaccepted | ghost_404),
        "status_mismatch": sorted(mismatched),
        "malformed_not_dead_lettered": sorted(not_dead),
        "stalled_queues": [f"{q}={n}" for q, n in sorted(stalled.items())],
        "unhealthy_services": unhealthy,
        "http_5xx": [f"{s} x{n}" for s, n in sorted(five.items())],
        "client_errors": refused,
        "gave_up": gave_up,
        "poison_not_dead_lettered": sorted(set(obs.poison) - dead_poison),
    })
    if obs.redeliveries:
        found["poison_loop"] = poison_loops(obs.redeliveries)
    # A check not judged (no ledger, or an inventory that could not be read) is not found.
    doubles = len(found.get("double_reservations", []))
    stock_vs_ledger = items_not_conserved(obs.inventory, reservations)
    counts: dict[str, Any] = {
        "requests": len(obs.requests),
        "accepted": len(accepted),
        "orders_placed": len(accepted),  # the shared invariants' words read this name
        "accepted_202": sum(1 for r in obs.requests if r.statuses and r.statuses[-1] == 202),
        "retried": sum(1 for r in obs.requests if len(r.statuses) > 1),
        "answers": {str(k): v for k, v in sorted(answers.items(), key=lambda kv: str(kv[0]))},
        "notified": len(set(notes_per_order) & accepted),
        "reserved": sum(1 for o in accepted if notified_status.get(o) == "RESERVED"),
        "failed": sum(1 for o in accepted if notified_status.get(o) == "FAILED"),
        "malformed_injected": len(obs.malformed_tags),
        "dlq_messages": len(obs.dlq),
        # At-least-once: a service killed after dead-lettering, before acking, dead-letters
        # the redelivery again. Reported, not judged: nothing is lost or done twice by it.
        "dlq_repeated": sum(n - 1 for t, n in dead_tags.items() if t is not None and n > 1),
        **{k: len(v) for k, v in found.items()},
        "stock_conserved": (not found["stock_conserved"]) if "stock_conserved" in found
        else None,
        # One figure for "stock taken twice or wrongly" (README): reported, the parts judged.
        "reserved_twice": doubles + len(stock_vs_ledger)
        + len(found.get("outcomes_vs_ledger", [])),
        "ghosts_unaccepted": len(ghost_unaccepted),
        "ghosts_404": len(ghost_404),
        "http_5xx": sum(five.values()),
        "answered_503": answers.get(503, 0),
        "status_consumed": status_consumed,
        "client_errors": len(refused),
        "poison_orders": len(obs.poison),
        "poison_dead_lettered": len(set(obs.poison) & dead_poison),
        **obs.extra,
    }
    problems = [f"{INVARIANTS[k].name}: {INVARIANTS[k].broken_words(ids)}"
                for k, ids in found.items() if ids]
    facts = {"dlq": obs.dlq, "ledger": obs.ledger, "notifications": obs.notifications,
             "inventory": obs.inventory, "health": obs.health, **obs.facts}
    return Verdict(not problems, counts, problems, found, facts)
