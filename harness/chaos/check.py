"""The chaos checker: from what clients saw and what the services hold, valid or not.

Pure: it judges a `ChaosObservation` (plain data gathered after the run) and returns a
`Verdict` whose counts go into summary.json. Valid only if every count below is zero:

- lost:              an accepted (201/202) order without exactly one notification
- reserved_twice:    ledger rows taking one order's stock twice, items whose stock
                     arithmetic (initial - stock) disagrees with the ledger, and items whose
                     stock taken disagrees with the orders whose stored outcome is reserved
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
from harness.invariants import Verdict, double_reservations

# Which service consumes a queue (retry tiers belong to the queue they feed).
QUEUE_OWNER = {"order_placed": "inventory", "inventory_reserved": "notification",
               "inventory_failed": "notification", "order_status": "order"}

INVARIANTS = ("lost", "reserved_twice", "duplicate_orders", "ghosts", "status_mismatch",
              "malformed_not_dead_lettered", "stalled_queues", "unhealthy_services",
              "http_5xx", "client_errors", "gave_up")


def owner_of(queue: str) -> str | None:
    """The service that consumes a queue, or None for the DLQ and unknown queues."""
    for prefix, service in QUEUE_OWNER.items():
        if queue == prefix or queue.startswith(prefix + "."):
            return service
    return None


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


def _examples(ids: Any, n: int = 3) -> list[Any]:
    return sorted(ids)[:n]


def stock_counts(obs: ChaosObservation) -> dict[str, Any]:
    """Per-item stock arithmetic against the ledger, and against the orders whose stored
    outcome says reserved (with the quantities the order service holds for them)."""
    ledger_taken: Counter[str] = Counter()
    for r in obs.ledger.get("reservations", []):
        ledger_taken[r["item_id"]] += int(r["quantity"])
    items_of = {o["order_id"]: o.get("items", []) for o in obs.server_orders}
    outcome_taken: Counter[str] = Counter()
    for outcome in obs.ledger.get("outcomes", []):
        if outcome.get("reserved") is True:
            for line in items_of.get(outcome["order_id"], []):
                outcome_taken[line["item_id"]] += int(line["quantity"])
    vs_ledger, vs_outcomes = [], []
    for item, v in obs.inventory.items():
        taken = v["initial"] - v["stock"]
        if taken != ledger_taken.get(item, 0):
            vs_ledger.append(item)
        if taken != outcome_taken.get(item, 0):
            vs_outcomes.append(item)
    return {"items_stock_vs_ledger": vs_ledger, "items_stock_vs_outcomes": vs_outcomes}


def check_chaos(obs: ChaosObservation) -> Verdict:
    """Judge a chaos run; every invariant's count is in the verdict, valid iff all are 0."""
    accepted = {oid for r in obs.requests if r.accepted for oid in r.order_ids}
    notes_per_order = Counter(n["order_id"] for n in obs.notifications)
    notified_status = {n["order_id"]: n.get("status") for n in obs.notifications}

    lost = {o for o in accepted if notes_per_order.get(o, 0) != 1}

    doubles = double_reservations(obs.ledger.get("reservations", []))
    stock = stock_counts(obs)
    reserved_twice = (len(doubles) + len(stock["items_stock_vs_ledger"])
                      + len(stock["items_stock_vs_outcomes"]))

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
                 | {r["order_id"] for r in obs.ledger.get("reservations", [])}
                 | {r["order_id"] for r in obs.ledger.get("outcomes", [])})
    ghost_unaccepted = processed - accepted
    # Accepted, yet GET /order/<id> does not return it: 404, or no order at all.
    ghost_404 = {o for o in accepted if not isinstance(obs.lookups.get(o), dict)}

    mismatched = set()
    for o in accepted:
        found = obs.lookups.get(o)
        if isinstance(found, dict) and o in notified_status \
                and found.get("status") != notified_status[o]:
            mismatched.add(o)

    dead_tags = Counter(tag_of(m) for m in obs.dlq if m.get("reason"))
    dead = set(dead_tags)
    not_dead = obs.malformed_tags - dead

    stalled = {q: n for q, n in obs.queues_left.items()
               if n and owner_of(q) and obs.health.get(owner_of(q)) is not None}
    unhealthy = sorted(s for s, h in obs.health.items() if h is None)

    answers = Counter(s for r in obs.requests for s in r.statuses)
    http_5xx = sum(n for s, n in answers.items() if s is not None and s >= 500)
    # 409 is the Idempotency-Key protocol's "an attempt with this key is still in progress,
    # retry": the client does, so it is no error; any other 4xx for a valid order is.
    client_errors = sum(n for s, n in answers.items()
                        if s is not None and 400 <= s < 500 and s != 409)
    gave_up = [r.key for r in obs.requests if not r.accepted]

    counts: dict[str, Any] = {
        "requests": len(obs.requests),
        "accepted": len(accepted),
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
        "lost": len(lost),
        "reserved_twice": reserved_twice,
        "double_reservations": len(doubles),
        "items_stock_vs_ledger": len(stock["items_stock_vs_ledger"]),
        "items_stock_vs_outcomes": len(stock["items_stock_vs_outcomes"]),
        "duplicate_orders": len(duplicate_keys),
        "ghosts": len(ghost_unaccepted) + len(ghost_404),
        "ghosts_unaccepted": len(ghost_unaccepted),
        "ghosts_404": len(ghost_404),
        "status_mismatch": len(mismatched),
        "malformed_not_dead_lettered": len(not_dead),
        "stalled_queues": len(stalled),
        "unhealthy_services": len(unhealthy),
        "http_5xx": http_5xx,
        "client_errors": client_errors,
        "gave_up": len(gave_up),
        **obs.extra,
    }
    # (what was found, how to say it): each invariant is broken when its finding is truthy.
    findings: list[tuple[Any, str]] = [
        (lost, f"{len(lost)} accepted orders without exactly one notification "
               f"(e.g. {_examples(lost)})"),
        (doubles, f"{len(doubles)} orders reserved twice in the ledger "
                  f"(e.g. {_examples(doubles)})"),
        (stock["items_stock_vs_ledger"], "stock arithmetic disagrees with the ledger for "
                                         f"{stock['items_stock_vs_ledger']}"),
        (stock["items_stock_vs_outcomes"], "stock taken disagrees with the orders the "
                                           "inventory reserved for "
                                           f"{stock['items_stock_vs_outcomes']}"),
        (duplicate_keys, f"{len(duplicate_keys)} client requests became two orders (e.g. "
                         f"{[sorted(ids_per_key[k]) for k in _examples(duplicate_keys, 2)]})"),
        (ghost_unaccepted, f"{len(ghost_unaccepted)} orders processed but never accepted "
                           f"(e.g. {_examples(ghost_unaccepted)})"),
        (ghost_404, f"{len(ghost_404)} accepted orders not returned by GET (404 or no "
                    f"answer) (e.g. {_examples(ghost_404)})"),
        (mismatched, f"{len(mismatched)} orders whose GET status disagrees with the "
                     f"notification (e.g. {_examples(mismatched)})"),
        (not_dead, f"{len(not_dead)} malformed messages not in the DLQ with a reason "
                   f"(e.g. {_examples(not_dead)})"),
        (stalled, f"queues not drained while their consumer says ok: {stalled}"),
        (unhealthy, f"services not healthy at the end: {unhealthy}"),
        (http_5xx, f"{http_5xx} answers were 5xx "
                   f"({ {k: v for k, v in counts['answers'].items() if k[0] == '5'} })"),
        (client_errors, f"{client_errors} valid orders were answered 4xx"),
        (gave_up, f"{len(gave_up)} requests never accepted within the client's bound "
                  f"(e.g. {_examples(gave_up)})"),
    ]
    problems = [message for found, message in findings if found]
    return Verdict(not problems, counts, problems)
