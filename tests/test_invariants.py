"""The one invariant record and the one checker, shown the real mistakes of issue 17: each
must get the right verdict AND the right cause; correct but different designs must pass.

Pure logic on hand-made end states (what GET /orders, /inventory, /reservations,
/notifications and the DLQ held): fakes are fine here. The same states go through the
scenario checker (check_run) and the chaos checker (check_chaos): they must agree.
"""

from __future__ import annotations

import copy
import json

import pytest

from harness.chaos.check import JUDGED, ChaosObservation, ClientRequest, check_chaos
from harness.grading.causes import ADVICE, explain, root_causes
from harness.invariants import (
    ALWAYS,
    INCOMPLETE,
    INVARIANTS,
    SHARED,
    Check,
    card_verdict,
    check_run,
    expected_outcomes,
    invariant_checks,
)
from harness.scenarios.baseline import PROBES, _probe_checks

# Three orders: A (2 x item_1) and B (1 x item_2) reserved; C (5 x item_2) failed, short.
ITEMS = {"A": [{"item_id": "item_1", "quantity": 2, "price": 1.0}],
         "B": [{"item_id": "item_2", "quantity": 1, "price": 1.0}],
         "C": [{"item_id": "item_3", "quantity": 1, "price": 1.0},
               {"item_id": "item_2", "quantity": 5, "price": 1.0}]}
STATUS = {"A": "RESERVED", "B": "RESERVED", "C": "FAILED"}
KILL = [{"t": 1.0, "kind": "kill", "target": "inventory", "detail": "SIGKILL"}]


def state() -> dict:
    """A correct end state: everything adds up."""
    return {
        "accepted": ["A", "B", "C"],
        "orders": [{"order_id": o, "items": ITEMS[o], "status": STATUS[o]} for o in "ABC"],
        "inventory": {"item_1": {"initial": 10, "stock": 8}, "item_2": {"initial": 3, "stock": 2},
                      "item_3": {"initial": 9, "stock": 9}},
        "ledger": {"reservations": [{"order_id": "A", "item_id": "item_1", "quantity": 2},
                                    {"order_id": "B", "item_id": "item_2", "quantity": 1}],
                   "outcomes": [{"order_id": o, "reserved": STATUS[o] == "RESERVED"}
                                for o in "ABC"]},
        "notifications": [{"order_id": o, "status": STATUS[o]} for o in "ABC"],
        "dlq": [],
    }


def judge(s: dict, **kw):
    return check_run(accepted=s["accepted"], inventory=s["inventory"], ledger=s["ledger"],
                     notifications=s["notifications"], dlq=s["dlq"], orders=s["orders"], **kw)


def chaos_obs(s: dict) -> ChaosObservation:
    """The same end state as the chaos checker sees it."""
    requests = [ClientRequest(f"k-{o}", f"u-{o}", ITEMS[o], [201], [o]) for o in s["accepted"]]
    orders = [{**o, "user_id": f"u-{o['order_id']}"} for o in s["orders"]]
    return ChaosObservation(
        requests=requests, server_orders=orders,
        lookups={o["order_id"]: o for o in orders}, notifications=s["notifications"],
        inventory=s["inventory"], ledger=s["ledger"], dlq=s["dlq"], malformed_tags=set(),
        queues_left={}, health={"order": {}, "inventory": {}, "notification": {}},
        ledger_snapshots=s.get("snapshots", []), facts={"timeline": s.get("timeline", [])})


def broken_keys(v) -> set[str]:
    return {k for k, ids in v.evidence.items() if ids}


def cause_of(v, key: str) -> str | None:
    found = explain(key, v.evidence[key], v.facts)
    return found.key if found else None


# ---- the record -----------------------------------------------------------------------------


def test_one_record_holds_every_judged_invariant_with_its_words():
    assert set(SHARED) | set(JUDGED) <= set(INVARIANTS) and set(ALWAYS) <= set(SHARED)
    for inv in INVARIANTS.values():
        assert inv.name and inv.expected and inv.hint and inv.held
        assert inv.evidence_key == inv.key  # no renaming on the way
        inv.broken_words(["X1", "X2"])  # every hint formats with the ids it is given
        inv.held_words({})


def test_a_correct_run_is_valid_for_both_checkers():
    v = judge(state())
    assert v.valid, v.problems
    c = check_chaos(chaos_obs(state()))
    assert c.valid, c.problems


def test_a_correct_but_different_ledger_passes():
    """One ledger row per line (two lines of one item), and no `outcomes` list at all."""
    s = state()
    s["orders"][0]["items"] = [{"item_id": "item_1", "quantity": 1, "price": 1.0}] * 2
    s["ledger"]["reservations"][0:1] = [{"order_id": "A", "item_id": "item_1", "quantity": 1}] * 2
    del s["ledger"]["outcomes"]
    v = judge(s)
    assert v.valid, v.problems


# ---- the real mistakes: verdict and cause -------------------------------------------------


def oversell(s):
    """An inventory that never checks stock: C is reserved, item_2 ends at -3."""
    s["ledger"]["reservations"] += [{"order_id": "C", "item_id": "item_3", "quantity": 1},
                                    {"order_id": "C", "item_id": "item_2", "quantity": 5}]
    s["inventory"]["item_2"]["stock"] = -3
    s["inventory"]["item_3"]["stock"] = 8
    s["ledger"]["outcomes"][2]["reserved"] = True
    s["notifications"][2]["status"] = s["orders"][2]["status"] = "RESERVED"


def pk_duplicates(s):
    """No duplicate check, the primary key refuses the repeat: the copy is dead-lettered."""
    s["dlq"].append({"reason": "handler failed: IntegrityError: UNIQUE constraint failed: "
                               "reservations.order_id", "body": json.dumps(
                                   {"event_type": "OrderPlaced", "order_id": "B"})})


def ignored_nack(s):
    """Nacked outcome ignored, input acked: B reserved in the ledger, never notified."""
    s["notifications"].pop(1)


def fresh_outcome_for_duplicate(s):
    """A republished FAILED order answered with a fresh InventoryReserved."""
    s["ledger"]["outcomes"][2]["reserved"] = True
    s["orders"][2]["status"] = "RESERVED"


def partial_failed(s):
    """A FAILED order keeps the stock of its first line."""
    s["ledger"]["reservations"].append({"order_id": "C", "item_id": "item_3", "quantity": 1})
    s["inventory"]["item_3"]["stock"] = 8


def memory_ledger(s):
    """A ledger kept in memory: after the kill -9 it knows nothing of A."""
    s["snapshots"] = [[{"order_id": "A", "item_id": "item_1", "quantity": 2}]]
    s["timeline"] = KILL
    s["ledger"]["reservations"].pop(0)
    s["ledger"]["outcomes"].pop(0)
    s["inventory"]["item_1"]["stock"] = 10


def ack_first(s):
    """Acked before the work was done, then killed: A left no trace anywhere."""
    s["timeline"] = KILL
    s["notifications"].pop(0)
    s["ledger"]["reservations"].pop(0)
    s["ledger"]["outcomes"].pop(0)
    s["inventory"]["item_1"]["stock"] = 10


def double_after_restart(s):
    """A processed-order record in memory: the redelivery after a kill reserves A again."""
    s["timeline"] = KILL
    s["ledger"]["reservations"].append(dict(s["ledger"]["reservations"][0]))
    s["inventory"]["item_1"]["stock"] = 6


def double_without_restart(s):
    """No duplicate check at all: a redelivered A reserved again, no restart."""
    s["ledger"]["reservations"].append(dict(s["ledger"]["reservations"][0]))
    s["inventory"]["item_1"]["stock"] = 6


def notified_twice(s):
    s["notifications"].append(dict(s["notifications"][0]))


# (mistake, the keys it breaks, {key: the cause the evidence must name}, check_run kwargs)
MISTAKES = [
    (oversell, {"stock_negative", "failed_iff_short"},
     {"stock_negative": "no_stock_check", "failed_iff_short": "no_stock_check"},
     {"expected": {"A": True, "B": True, "C": False}}),
    (pk_duplicates, {"valid_in_dlq"}, {"valid_in_dlq": "pk_duplicate"}, {}),
    (ignored_nack, {"lost"}, {"lost": "outcome_not_delivered"}, {}),
    (fresh_outcome_for_duplicate, {"failed_flipped", "outcomes_vs_ledger"},
     {"failed_flipped": "fresh_outcome",
      "outcomes_vs_ledger": "outcome_without_ledger"}, {"must_stay_failed": ["C"]}),
    (partial_failed, {"outcomes_vs_ledger"}, {"outcomes_vs_ledger": "partial_reservation"}, {}),
    (memory_ledger, {"ledger_forgot", "outcomes_vs_ledger"},
     {"ledger_forgot": "ledger_not_durable", "outcomes_vs_ledger": "outcome_without_ledger"},
     {}),
    (ack_first, {"lost"}, {"lost": "ack_before_work"}, {}),
    (double_after_restart, {"double_reservations"},
     {"double_reservations": "record_lost_in_restart"}, {}),
    (double_without_restart, {"double_reservations"},
     {"double_reservations": "no_duplicate_check"}, {}),
    (notified_twice, {"duplicate_notifications"},
     {"duplicate_notifications": "notifier_not_idempotent"}, {}),
]


@pytest.mark.parametrize("mistake,keys,causes,kwargs", MISTAKES,
                         ids=[m[0].__name__ for m in MISTAKES])
def test_each_real_mistake_gets_its_verdict_and_its_cause(mistake, keys, causes, kwargs):
    s = state()
    mistake(s)
    v = judge(s, ledger_snapshots=s.get("snapshots"), facts={"timeline": s.get("timeline")},
              **kwargs)
    assert not v.valid
    assert broken_keys(v) == keys, v.problems
    for key, cause in causes.items():
        assert cause_of(v, key) == cause, (key, explain(key, v.evidence[key], v.facts))


@pytest.mark.parametrize("mistake,keys,causes,kwargs", MISTAKES,
                         ids=[m[0].__name__ for m in MISTAKES])
def test_the_chaos_checker_agrees_on_the_shared_invariants(mistake, keys, causes, kwargs):
    s = state()
    mistake(s)
    # What only a scenario knows (the stock's expected outcomes, which orders were
    # republished) stays out: on the same evidence the two must agree.
    scenario = judge(s, ledger_snapshots=s.get("snapshots"))
    chaos = check_chaos(chaos_obs(s))
    shared = set(JUDGED) & set(SHARED)
    assert broken_keys(scenario) & shared == broken_keys(chaos) & shared


def test_a_lost_order_in_the_dlq_with_a_key_clash_blames_the_primary_key_not_the_ack():
    s = state()
    s["notifications"].pop(1)
    s["ledger"]["outcomes"].pop(1)
    s["ledger"]["reservations"].pop(1)
    s["inventory"]["item_2"]["stock"] = 3
    pk_duplicates(s)
    v = judge(s, facts={"timeline": KILL})
    assert cause_of(v, "lost") == "pk_duplicate"
    assert "primary key" in ADVICE["pk_duplicate"]


def test_a_lost_order_is_explained_by_what_the_scenario_saw_of_it():
    """Broker nacks, a never-published InventoryFailed, an outcome held through a broker
    restart: each cause is named only from what the run recorded about that order."""
    s = state()
    ignored_nack(s)  # B reserved in the ledger, never notified
    refused = {"publishes_refused": {"queue": "inventory_reserved", "orders": ["B"]}}
    assert cause_of(judge(s, facts=refused), "lost") == "outcome_refused"
    # Placed before the refusal: its loss is not the refusal's.
    before = {"publishes_refused": {"queue": "inventory_reserved", "orders": ["A"]}}
    assert cause_of(judge(s, facts=before), "lost") == "outcome_not_delivered"

    s = state()
    s["notifications"].pop(2)  # C, FAILED in the ledger, never notified; A and B were
    v = judge(s, expected={"A": True, "B": True, "C": False})
    found = explain("lost", v.evidence["lost"], v.facts)
    assert found.key == "failed_never_published"
    assert "FAILED in the ledger (e.g. C)" in found.evidence
    assert "the stock could not cover them" in found.evidence

    s = state()
    ignored_nack(s)
    held = {"waited": [{"order_id": "B", "queue": "inventory_reserved", "delivery_mode": 1}],
            "before": {"inventory_reserved": 1, "inventory_failed": 0},
            "after": {"inventory_reserved": 0, "inventory_failed": 0}}
    found = explain("lost", ["B"], judge(s, facts={"held_outcomes": held}).facts)
    assert found.key == "transient_outcomes" and "delivery_mode 1" in found.evidence
    persistent = {**held, "waited": [{**held["waited"][0], "delivery_mode": 2}]}
    assert cause_of(judge(s, facts={"held_outcomes": persistent}), "lost") == \
        "lost_in_broker_restart"
    # The queue kept it through the restart: the restart did not lose it.
    kept = {**held, "after": held["before"]}
    assert cause_of(judge(s, facts={"held_outcomes": kept}), "lost") == "outcome_not_delivered"


def test_lost_orders_mostly_without_a_trace_after_a_kill_blame_the_early_ack():
    """Ack-first killed mid-stream: A left no trace, B was decided but never published.
    Both were acked too early; the one decided order does not make it a delivery problem."""
    s = state()
    ack_first(s)
    s["notifications"] = [n for n in s["notifications"] if n["order_id"] != "B"]
    found = explain("lost", ["A", "B"], judge(s, facts={"timeline": KILL}).facts)
    assert found.key == "ack_before_work"
    assert "1 more have an outcome in the ledger (e.g. B)" in found.evidence


def test_a_lost_order_cause_never_cites_a_ledger_or_dlq_it_could_not_read():
    """The original lab: no GET /reservations, no DLQ. A kill came first; the evidence says
    what could not be looked at instead of calling it empty."""
    s = state()
    s["notifications"] = [n for n in s["notifications"] if n["order_id"] != "A"]
    s["ledger"] = {"reservations": [], "outcomes": []}
    neither = judge(s, facts={"timeline": KILL, "unknown": ["dlq", "ledger"]}).facts
    found = explain("lost", ["A"], neither)
    assert found.key == "ack_before_work" and "no ledger row" not in found.evidence
    assert "neither the ledger, GET /reservations, nor a DLQ could be read" in found.evidence
    no_dlq = explain("lost", ["A"], judge(s, facts={"timeline": KILL, "unknown": ["dlq"]}).facts)
    assert "no ledger row for any of them (there is no DLQ to look in)" in no_dlq.evidence
    # With no kill and nothing readable, no cause is guessed at all.
    assert explain("lost", ["A"], judge(s, facts={"unknown": ["dlq", "ledger"]}).facts) is None


def test_orders_notified_twice_because_decided_twice_after_a_restart_are_one_cause():
    s = state()
    s["notifications"].append({"order_id": "A", "status": "RESERVED"})
    restart = [{"t": 1.0, "kind": "restart", "target": "inventory", "detail": "SIGTERM"}]
    v = judge(s, facts={"timeline": restart, "decided_twice": ["A"]})
    found = explain("duplicate_notifications", ["A"], v.facts)
    assert found.key == "record_lost_in_restart" and "decided twice" in found.evidence
    # Without the tap's evidence the notifier's own idempotency is what is asked about.
    assert cause_of(judge(s), "duplicate_notifications") == "notifier_not_idempotent"


def test_a_flipped_failed_order_with_ledger_lines_was_reserved_anew_not_answered_fresh():
    s = state()
    s["ledger"]["reservations"].append({"order_id": "C", "item_id": "item_3", "quantity": 1})
    s["ledger"]["outcomes"][2]["reserved"] = True
    s["inventory"]["item_3"]["stock"] = 8
    v = judge(s, must_stay_failed=["C"])
    found = explain("failed_flipped", v.evidence["failed_flipped"], v.facts)
    assert found.key == "reserved_on_duplicate" and "holds 1 reservation lines" in found.evidence


def test_a_lost_order_with_no_evidence_of_any_cause_is_not_told_one():
    s = state()
    s["notifications"].pop(0)
    v = check_run(accepted=s["accepted"], inventory=s["inventory"], ledger=s["ledger"],
                  notifications=s["notifications"], dlq=s["dlq"])
    # A is in the ledger: decided, not delivered; the cause says so (it saw the outcome).
    assert cause_of(v, "lost") == "outcome_not_delivered"
    assert explain("lost", ["A"], {}) is None  # nothing recorded: no cause guessed


def test_one_root_cause_is_listed_once_with_every_check_it_broke():
    s = state()
    oversell(s)
    v = judge(s, expected={"A": True, "B": True, "C": False})
    rows = invariant_checks("stock-exhaustion", "tried", v)
    failed = [r for r in rows if r.passed is False]
    assert {r.key for r in failed} == {"stock_negative", "failed_iff_short"}
    groups = root_causes(rows)
    assert [(k, len(checks)) for k, _advice, checks in groups] == [("no_stock_check", 2)]
    assert all("Evidence:" in r.happened for r in failed)


def test_every_scenario_card_carries_the_always_rows_whatever_its_only():
    rows = invariant_checks("x", "tried", judge(state()), only=("lost",))
    assert [r.key for r in rows] == ["lost", "stock_negative", "failed_iff_short",
                                     "outcomes_vs_ledger", "valid_in_dlq"]
    assert all(r.passed for r in rows)


def test_expected_outcomes_are_all_or_nothing_in_the_order_handled():
    placed = [{"order_id": "1", "items": [{"item_id": "a", "quantity": 2}]},
              {"order_id": "2", "items": [{"item_id": "b", "quantity": 1},
                                          {"item_id": "a", "quantity": 2}]},
              {"order_id": "3", "items": [{"item_id": "b", "quantity": 1}]}]
    # 2 fails on a, so it keeps nothing of b: 3 still gets the last b.
    assert expected_outcomes(placed, {"a": 3, "b": 1}) == {"1": True, "2": False, "3": True}


# ---- the HTTP probe (the order service with its validation removed) -------------------------


def test_an_order_service_without_validation_fails_the_probe():
    answers = [(what, want, 201 if want == 400 else want) for what, _b, _c, want in PROBES]
    refused, published = _probe_checks(answers, ['{"user_id": "probe-invalid", ...}'])
    assert refused.passed is False and "quantity -5: 201 (expected 400)" in refused.happened
    assert published.passed is False
    ok = _probe_checks([(w, want, want) for w, _b, _c, want in PROBES], [])
    assert all(c.passed for c in ok)


# ---- the card's verdict ----------------------------------------------------------------------


def test_a_card_whose_fault_scenarios_were_skipped_is_incomplete_not_passed():
    passed = Check("baseline", "nothing lost", "t", "e", "h", True)
    skipped = Check("reconnect", "(scenario)", "t", "-", "skipped: URL broker", None,
                    {"skipped": True})
    failed = Check("baseline", "stock never below zero", "t", "e", "h", False)
    assert card_verdict([passed]) == "PASSED"
    assert card_verdict([passed, skipped]) == INCOMPLETE
    assert card_verdict([passed, skipped, failed]) == "FAILED"
    short = Check("stock-exhaustion", "stock ran short", "t", "e", "h", None,
                  {"skipped": True, "incomplete": True})
    assert card_verdict([passed, short]) == INCOMPLETE


def test_the_chaos_verdict_reads_the_record():
    obs = chaos_obs(state())
    obs.dlq.append({"reason": "IntegrityError", "body": json.dumps({"order_id": "A"})})
    v = check_chaos(copy.deepcopy(obs))
    assert not v.valid and v.evidence["valid_in_dlq"] == ["A"]
    assert any(p.startswith(INVARIANTS["valid_in_dlq"].name) for p in v.problems)


def test_every_hostile_dead_letter_is_data_to_the_checker_not_a_crash():
    from harness.chaos.messages import KINDS, malformed_message
    s = state()
    s["dlq"] = [{"reason": "body: bad", "body": malformed_message(k, n)[0].decode(
        errors="replace")} for n, k in enumerate(KINDS)]
    v = judge(s, malformed_injected=len(KINDS))
    assert v.valid, v.problems


def test_a_lost_order_behind_a_live_but_stalled_consumer_names_the_dead_thread():
    """/health says 200 while order_placed still holds the order: the consumer died inside."""
    s = state()
    ack_first(s)
    s["timeline"] = []
    v = judge(s, facts={"health": {"inventory": {"status": "ok"}},
                        "queues_left": {"order_placed": 1, "inventory_reserved": 0}})
    assert cause_of(v, "lost") == "consumer_stalled"
    v = judge(s, facts={"health": {"inventory": None}, "queues_left": {"order_placed": 1}})
    assert cause_of(v, "lost") == "consumer_dead"


def test_what_could_not_be_read_is_not_judged_rather_than_passed():
    """No GET /reservations (a contract gap): no ledger invariant passes by default."""
    s = state()
    v = check_run(accepted=s["accepted"], inventory={}, ledger=None,
                  notifications=s["notifications"], dlq=[])
    assert set(v.judged) == {"lost", "duplicate_notifications", "valid_in_dlq"}
    assert v.valid and v.counts["stock_conserved"] is None
    rows = invariant_checks("x", "tried", v)
    assert {r.key for r in rows} == {"lost", "duplicate_notifications", "valid_in_dlq"}


def test_the_chaos_checker_leaves_unjudged_what_a_dead_inventory_hid():
    """Naive at full size: its inventory was down when the state was read (empty inventory):
    stock is not judged, never a KeyError that loses the whole chaos card."""
    s = state()
    obs = chaos_obs(s)
    obs.inventory = {}
    v = check_chaos(obs)
    assert v.counts["stock_conserved"] is None and "stock_conserved" not in v.evidence
