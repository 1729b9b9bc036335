"""Pure logic: the checker's invariants on hand-made run states (fakes are fine here)."""

from __future__ import annotations

import json

from harness.invariants import check_run, double_reservations, stock_conserved

INVENTORY = {"item_1": {"initial": 10, "stock": 7}, "item_2": {"initial": 5, "stock": 5}}
LEDGER = {"reservations": [{"order_id": "A", "item_id": "item_1", "quantity": 3}],
          "outcomes": [{"order_id": "A", "reserved": True}, {"order_id": "B", "reserved": False}]}


def notes(*ids):
    return [{"order_id": i} for i in ids]


def test_a_clean_run_is_valid():
    v = check_run(accepted=["A", "B"], inventory=INVENTORY, ledger=LEDGER,
                  notifications=notes("A", "B"), dlq=[])
    assert v.valid, v.problems
    assert v.counts["reserved"] == 1 and v.counts["failed"] == 1 and v.counts["lost"] == 0


def test_lost_and_duplicated_notifications_are_invalid():
    v = check_run(accepted=["A", "B"], inventory=INVENTORY, ledger=LEDGER,
                  notifications=notes("A", "A"), dlq=[])
    assert not v.valid
    assert v.counts["lost"] == 1 and v.counts["duplicate_notifications"] == 1


def test_double_reservation_is_seen_and_stock_still_accounted():
    ledger = {"reservations": LEDGER["reservations"] * 2, "outcomes": LEDGER["outcomes"]}
    inventory = {**INVENTORY, "item_1": {"initial": 10, "stock": 4}}
    assert double_reservations(ledger["reservations"]) == {"A": 2}
    assert stock_conserved(inventory, ledger["reservations"])
    v = check_run(accepted=["A", "B"], inventory=inventory, ledger=ledger,
                  notifications=notes("A", "B"), dlq=[])
    assert not v.valid and v.counts["double_reservations"] == 1


def test_stock_not_conserved_is_invalid():
    inventory = {**INVENTORY, "item_2": {"initial": 5, "stock": 4}}
    v = check_run(accepted=["A", "B"], inventory=inventory, ledger=LEDGER,
                  notifications=notes("A", "B"), dlq=[])
    assert not v.valid and v.counts["stock_conserved"] is False


def test_dlq_accounting():
    malformed = [{"body": "not json"}, {"body": json.dumps({"user_id": "x"})}]
    ok = check_run(accepted=["A", "B"], inventory=INVENTORY, ledger=LEDGER,
                   notifications=notes("A", "B"), dlq=malformed, malformed_injected=2)
    assert ok.valid, ok.problems
    valid_in_dlq = malformed + [{"body": json.dumps({"order_id": "A"})}]
    bad = check_run(accepted=["A", "B"], inventory=INVENTORY, ledger=LEDGER,
                    notifications=notes("A", "B"), dlq=valid_in_dlq, malformed_injected=2)
    assert not bad.valid and bad.counts["valid_orders_in_dlq"] == 1
    poison = check_run(accepted=["A", "B", "P"], inventory=INVENTORY, ledger=LEDGER,
                       notifications=notes("A", "B"), dlq=[{"body": json.dumps(
                           {"order_id": "P"})}], expected_dead={"P"})
    assert poison.valid, poison.problems
