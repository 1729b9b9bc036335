"""Every scenario at reduced size on a real broker: its verdict and its teaching point."""

from __future__ import annotations

import json

import pytest

from harness import scenarios
from lab_services import topology as topo

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def summary_of(result) -> dict:
    return json.loads((result.run_dir / "summary.json").read_text())


def test_baseline_notifies_every_order(broker, tmp_path):
    result = scenarios.baseline(broker, orders=40, out=tmp_path, progress=False)
    assert result.valid, result.verdict.problems
    s = summary_of(result)
    assert s["orders_placed"] == s["notified"] == 40 and s["lost"] == 0
    assert s["reserved"] + s["failed"] == 40
    assert s["latency_ms"]["p50"] <= s["latency_ms"]["p99"] <= s["latency_ms"]["max"]
    assert {"orders.csv", "notifications.csv", "latency.csv", "queue_depth.csv",
            "queue_depth.png", "latency_cdf.png", "faults.csv"} <= set(s["files"])
    assert (result.run_dir / "logs" / "inventory.log").exists()
    # The invalid requests were refused with the contract's statuses, and published nothing.
    probe = {c["name"]: c for c in s["checks"]}
    assert probe["invalid requests refused"]["passed"] is True
    assert probe["invalid requests publish nothing"]["passed"] is True
    assert set(probe["invalid requests refused"]["evidence"]["answers"].values()) == {
        400, 413, 415}


def test_stock_runs_out_and_orders_fail_exactly_when_short(broker, tmp_path):
    from harness.scenarios.stock_exhaustion import stock_exhaustion
    result = stock_exhaustion(broker, orders=10, out=tmp_path, progress=False)
    assert result.valid, result.verdict.problems
    s = summary_of(result)
    assert s["failed"] > 0 and s["reserved"] > 0 and s["lost"] == 0
    by_key = {c["key"]: c["passed"] for c in s["checks"] if c["key"]}
    assert by_key["failed_iff_short"] and by_key["stock_negative"]


def test_orders_survive_the_broker_nacking_their_outcomes(broker, tmp_path):
    from harness.scenarios.broker_nacks import broker_nacks
    result = broker_nacks(broker, orders=8, out=tmp_path, progress=False)
    assert result.valid, result.verdict.problems
    # The refusal bit: the lab's inventory saw its outcomes refused, and published again.
    assert "refused an output" in (result.run_dir / "logs" / "inventory.log").read_text()
    assert summary_of(result)["notified"] == 8


def test_backlog_rises_while_inventory_is_down_and_drains_to_zero(broker, tmp_path):
    result = scenarios.backlog_drain(broker, orders=120, rate=200, work_ms=2, hold_s=0.5,
                                     out=tmp_path, progress=False)
    assert result.valid, result.verdict.problems
    depth = result.frames["queue_depth"]
    placed = depth[depth["queue"] == topo.QUEUE_ORDER_PLACED].dropna(subset=["ready"])
    timeline = result.timeline.set_index("kind")
    stopped_at, started_at = timeline.loc["stop", "t"], timeline.loc["start", "t"]
    while_down = placed[(placed["t"] > stopped_at) & (placed["t"] < started_at)]
    assert while_down["ready"].max() == 120  # the whole backlog waited in the queue
    assert while_down["consumers"].max() == 0
    assert placed.iloc[-1]["ready"] == 0  # and it drained after the restart
    assert result.summary["drain_rate_msg_s"] > 0 and result.summary["time_to_empty_s"] > 0
    assert result.summary["notified"] == 120


def test_idempotency_only_sqlite_reserves_exactly_once(broker, tmp_path):
    result = scenarios.idempotency(broker, orders=4, out=tmp_path, progress=False)
    assert result.valid, result.verdict.problems
    table = result.frames["double_reservations"].set_index(["mode", "case"])
    doubles = table["double_reservations"]
    assert doubles["off", "duplicates"] == 4 and doubles["off", "after restart"] == 4
    assert doubles["memory", "duplicates"] == 0 and doubles["memory", "after restart"] == 4
    assert doubles["sqlite", "duplicates"] == 0 and doubles["sqlite", "after restart"] == 0
    assert result.summary["duplicate_notifications"] == 0 and result.summary["lost"] == 0


def test_crash_windows_show_what_each_design_misses(broker, tmp_path):
    result = scenarios.crash_window(broker, out=tmp_path, progress=False)
    assert result.valid, result.verdict.problems
    t = result.frames["crash_window"].set_index(["mode", "point"])
    assert t["crashed"].all()
    # Crashing before the commit is harmless for every design.
    assert (t.xs("before_commit", level="point")[["lost", "double_reservation"]] == 0).all().all()
    # A durable "seen it" record without the stored outcome drops the redelivery:
    # the customer is never told.
    assert t.loc[("skip", "after_commit"), "lost"] == 1
    # Without a durable record the redelivery reserves the stock again.
    for mode in ("off", "memory"):
        for point in ("after_commit", "after_publish"):
            assert t.loc[(mode, point), "double_reservation"] == 1
    # The transactional design is right at every point.
    sqlite = t.xs("sqlite", level="mode")
    assert (sqlite["lost"] == 0).all() and (sqlite["double_reservation"] == 0).all()
    assert (sqlite["notified"] == 1).all()


def test_dlq_receives_exactly_the_bad_messages_with_reasons(broker, tmp_path):
    result = scenarios.dlq(broker, orders=20, malformed_each=1, poison=1, out=tmp_path,
                           progress=False)
    assert result.valid, result.verdict.problems
    s = result.summary
    assert s["malformed_in_dlq"] == s["malformed_injected"] == 5
    assert s["dlq_messages"] == 6 and s["lost"] == 0
    assert s["poison_attempts"] == [len(topo.RETRY_DELAYS_MS) + 1]
    reasons = " | ".join(s["dlq_reasons"])
    for fragment in ("not valid JSON", "oversize", "event_id: missing", "event_type: unknown",
                     "quantity: must be an integer", "handler failed after"):
        assert fragment in reasons


def test_reconnect_loses_nothing_across_a_broker_restart(broker, tmp_path):
    result = scenarios.reconnect(broker, orders=80, rate=30, outage_after_s=1.0, out=tmp_path,
                                 progress=False, held_orders=6)
    assert result.valid, result.verdict.problems
    s = result.summary
    assert s["lost"] == 0 and s["services_restarted"] is False
    assert all(n >= 1 for n in s["reconnects"].values())
    assert s["orders_placed"] - s["held_orders"] + s["orders_refused_finally"] == 80
    # The second restart, with the notification service stopped: the lab's persistent
    # outcomes waited through it and were all notified (lost == 0 above).
    assert s["held_skipped"] is None and s["held_outcomes_waited"] == s["held_orders"] > 0


def _naive_variant(tmp_path, old: str, new: str):
    """examples/naive with one mistake written in (a real service, a real broker)."""
    import shutil
    from pathlib import Path
    src = Path(__file__).resolve().parents[1] / "examples" / "naive"
    dst = tmp_path / "variant"
    shutil.copytree(src, dst)
    inventory = dst / "inventory.py"
    text = inventory.read_text()
    assert old in text
    inventory.write_text(text.replace(old, new))
    return dst / "impl.toml"


def test_an_inventory_that_never_checks_stock_is_caught_overselling(broker, tmp_path):
    from harness.scenarios.stock_exhaustion import stock_exhaustion
    impl = _naive_variant(tmp_path, 'if row["stock"] < line["quantity"]:',
                          'if False:  # oversell: the stock is never checked')
    result = stock_exhaustion(broker, orders=10, out=tmp_path, progress=False, impl=impl)
    assert not result.valid
    rows = {c.key: c for c in result.checks if c.key}
    assert rows["stock_negative"].passed is False
    assert rows["stock_negative"].cause == "no_stock_check"
    assert rows["failed_iff_short"].passed is False
    assert rows["lost"].passed is True  # every order was notified: only the outcome is wrong
