"""How a drain is measured from the notifications' own timestamps (pure: made-up outcomes;
tests/test_scenarios.py and tests/test_scale_out.py measure real drains)."""

from __future__ import annotations

import pandas as pd
import pytest

from harness.scenarios import drain_stats
from harness.scenarios.backlog_drain import backlog_decisions, first_decisions

RELEASE = pd.Timestamp("2026-01-01T12:00:00", tz="UTC")


def _note(order_id: str, decided_after_s: float) -> dict:
    decided = RELEASE + pd.Timedelta(seconds=decided_after_s)
    return {"order_id": order_id, "status": "CONFIRMED",
            "order_timestamp": (RELEASE - pd.Timedelta(seconds=5)).isoformat(),
            "outcome_timestamp": decided.isoformat(),
            "notified_at": (decided + pd.Timedelta(milliseconds=3)).isoformat()}


# Ten orders: a consumer that prepared a burst for 4 s, then decided all ten over 1 s.
BURST = [_note(f"o{i}", 4 + i / 9) for i in range(10)]


def test_from_the_first_outcome_the_rate_leaves_out_the_work_before_it():
    stats = drain_stats(BURST, {n["order_id"] for n in BURST}, RELEASE)
    assert stats == {"drain_rate_msg_s": 9.0, "time_to_empty_s": 5.0}


def test_the_first_decisions_and_the_rest_at_the_rate_add_up_to_the_time_to_empty():
    ids = {n["order_id"] for n in BURST}
    stats = drain_stats(BURST, ids, RELEASE)
    first = first_decisions(backlog_decisions(BURST, ids), RELEASE)
    assert first == {"first_decision_s": 4.0, "decisions": 10}  # the burst's work comes first
    assert first["first_decision_s"] + (first["decisions"] - 1) / stats["drain_rate_msg_s"] \
        == pytest.approx(stats["time_to_empty_s"])


def test_without_outcome_timestamps_there_is_no_first_decision():
    bare = [{**n, "outcome_timestamp": None} for n in BURST]
    assert first_decisions(backlog_decisions(bare, {n["order_id"] for n in BURST}),
                           RELEASE) == {"first_decision_s": None, "decisions": 0}


def test_from_the_release_the_rate_is_the_backlog_over_the_time_to_empty():
    stats = drain_stats(BURST, {n["order_id"] for n in BURST}, RELEASE, rate_from="release")
    assert stats == {"drain_rate_msg_s": 2.0, "time_to_empty_s": 5.0}


def test_a_redelivered_order_notified_twice_counts_once_from_the_release():
    twice = [*BURST, _note("o3", 4.5)]
    stats = drain_stats(twice, {n["order_id"] for n in BURST}, RELEASE, rate_from="release")
    assert stats["drain_rate_msg_s"] == 2.0


def test_orders_outside_the_backlog_do_not_count():
    ids = {f"o{i}" for i in range(5)}
    stats = drain_stats(BURST, ids, RELEASE, rate_from="release")
    assert stats == {"drain_rate_msg_s": round(5 / (4 + 4 / 9), 1),
                     "time_to_empty_s": round(4 + 4 / 9, 2)}


def test_timestamps_written_with_and_without_microseconds_both_count():
    # Python's isoformat() drops ".000000": one order in a million, in another language's
    # implementation, every order. (A single pd.to_datetime over them all refused this.)
    mixed = [*BURST[:9], {**BURST[9], "outcome_timestamp": "2026-01-01T12:00:05+00:00"}]
    stats = drain_stats(mixed, {n["order_id"] for n in BURST}, RELEASE, rate_from="release")
    assert stats == {"drain_rate_msg_s": 2.0, "time_to_empty_s": 5.0}


def test_an_implementation_without_outcome_timestamps_gets_no_figures():
    bare = [{**n, "outcome_timestamp": None} for n in BURST]
    assert drain_stats(bare, {n["order_id"] for n in BURST}, RELEASE) == {
        "drain_rate_msg_s": None, "time_to_empty_s": None}


@pytest.mark.parametrize("stamp", ["not a time", 12345, {"a": 1}, "2026-01-01T12:00:05+99:00"])
def test_an_outcome_timestamp_that_is_not_one_gives_no_figures_and_no_error(stamp):
    # Another implementation writes these; the figures are then unknown, not a crash.
    notes = [*BURST[:9], {**BURST[9], "outcome_timestamp": stamp}]
    for rate_from in ("first", "release"):
        assert drain_stats(notes, {n["order_id"] for n in BURST}, RELEASE,
                           rate_from=rate_from) == {"drain_rate_msg_s": None,
                                                    "time_to_empty_s": None}


def test_an_unknown_way_to_measure_is_refused():
    with pytest.raises(ValueError, match="rate_from"):
        drain_stats(BURST, set(), RELEASE, rate_from="last")
