"""`harness bench` on a real broker with a small backlog: the fields are there and the
fraction of the floor is positive. Speed itself is never asserted."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

import pytest

from harness.bench.intake import wrk_path
from harness.bench.run import describe, run_bench

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_bench_measures_floor_and_lab_drain_at_both_settings_in_the_same_run(broker, tmp_path):
    report = run_bench(broker, backlog=300, runs=2, latency_orders=0, naive=None,
                       intake_seconds=0, out=tmp_path)
    assert [d["sqlite_synchronous"] for d in report["drains"]] == ["FULL", "NORMAL"]
    for d in report["drains"]:
        floor, lab = d["floor"], d["lab"]
        assert [e["backlog"] for e in floor["each"]] == [300, 300]
        assert [e["backlog"] for e in lab["each"]] == [300, 300]
        assert floor["drain_rate_msg_s"] == statistics.median(
            e["drain_rate_msg_s"] for e in floor["each"])
        assert lab["drain_rate_msg_s"] == statistics.median(
            e["drain_rate_msg_s"] for e in lab["each"])
        assert d["drain_vs_floor"] == round(lab["drain_rate_msg_s"] / floor["drain_rate_msg_s"],
                                            3)
    assert report["backlog"] == 300
    assert set(report["rss_mb_peak_while_draining"]) == {"order", "inventory", "notification"}
    assert all(mb > 0 for mb in report["rss_mb_peak_while_draining"].values())
    saved = json.loads((Path(report["run_dir"]) / "bench.json").read_text())
    assert saved["drains"] == report["drains"]
    text = describe(report)
    assert "synchronous=FULL" in text and "synchronous=NORMAL" in text
    assert [t["target"] for t in report["targets"]] == [
        "drain >= 0.8 of the floor (SQLITE_SYNCHRONOUS=FULL)",
        "drain >= 0.8 of the floor (SQLITE_SYNCHRONOUS=NORMAL)"]


def test_bench_compares_the_lab_with_the_naive_design(broker, tmp_path):
    if wrk_path() is None:
        if os.environ.get("CI"):
            pytest.fail("wrk is not installed (.ci/run installs it)")
        pytest.skip("wrk is not installed (apt-get install -y wrk)")
    report = run_bench(broker, backlog=100, runs=1, synchronous="FULL", latency_orders=0,
                       intake_seconds=1, intake_rounds=2, e2e_orders=20, naive_backlog=20,
                       out=tmp_path)
    shapes = [(1, 1), (2, 4), (2, 16)]
    floor = report["intake"]
    assert floor["floor"]["impl"] == "intake floor" and floor["lab"]["services"] == ["order"]
    for side in ("floor", "lab"):
        runs = floor[side]["runs"]
        assert [(r["threads"], r["connections"]) for r in runs] == shapes
        assert all(r["requests"] > 0 and sum(r["statuses"].values()) == r["requests"]
                   for r in runs)
        # Two rounds per shape, and the figure per shape is one of its real runs.
        assert floor[side]["rounds"] == 2
        assert all(len(every) == 2 and run in every
                   for run, every in zip(runs, floor[side]["every_run"], strict=True))
    # The floor does the durable minimum: every answer a 201.
    assert all(set(r["statuses"]) == {"201"} for r in floor["floor"]["runs"])
    assert set(floor["lab_vs_floor_by_connections"]) == {"1", "4", "16"}
    assert floor["lab_4_vs_1"] > 0
    vs = report["versus"]
    assert vs["impl"].endswith("impl.toml")
    intake = vs["intake"]
    for side in ("lab", "other"):
        runs = intake[side]["runs"]
        assert [(r["threads"], r["connections"]) for r in runs] == shapes
        for r in runs:
            assert r["requests"] > 0 and r["requests_s"] > 0 and r["seconds"] > 0
            # Every answer is counted by status, so nothing non-2xx can hide.
            assert sum(r["statuses"].values()) == r["requests"]
            assert r["non_2xx"] == r["requests"] - sum(
                n for code, n in r["statuses"].items() if code.startswith("2"))
    assert intake["other"]["impl"] == "naive" and intake["rounds"] == 2
    assert all(len(every) == 2 for every in intake["lab"]["every_run"])
    assert all(ratio > 0 for ratio in intake["ratio_by_connections"].values())
    assert (Path(report["run_dir"]) / "wrk-post-order.lua").exists()
    lat = vs["latency"]
    for side in ("lab", "other"):
        assert lat[side]["measured"] == 20
        assert all(lat[side]["end_to_end_ms"][p] > 0 for p in ("p50", "p95", "p99"))
    assert lat["p50_ratio"] > 0
    drain = vs["drain"]
    assert drain["lab"]["impl"] == "lab" and drain["other"]["impl"] == "naive"
    assert drain["lab"]["drain_rate_msg_s"] > 0 and drain["other"]["drain_rate_msg_s"] > 0
    assert drain["ratio"] > 0
    names = [t["target"] for t in report["targets"]]
    assert len(names) == 9 and all(isinstance(t["met"], bool) for t in report["targets"])
    assert sum("intake floor" in n for n in names) == 2
    assert any("4 connections >= 3.0x with 1" in n for n in names)
    text = describe(report)
    assert "HTTP intake (wrk, 4 connection(s)" in text and "p99" in text and "targets:" in text
    assert "of the floor; lab p99" in text
