"""The queue model (harness.reporting.model): pure logic, no broker."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from harness.reporting.model import (
    Outage,
    drain_time,
    littles_law_length,
    littles_law_wait,
    measure_backlog_drain,
    random_arrivals,
    service_rate_from_decisions,
    service_rate_from_depth,
    simulate,
    startup_from_depth,
    steady_arrivals,
    time_average,
    utilisation,
)

# ---- closed forms ---------------------------------------------------------------------------


@pytest.mark.parametrize(("backlog", "mu", "lam", "consumers", "expected"), [
    (300, 80, 0, 1, 3.75),
    (300, 80, 50, 1, 10.0),
    (300, 80, 0, 2, 1.875),
    (300, 80, 100, 2, 5.0),
    (0, 80, 50, 1, 0.0),
])
def test_drain_time_is_backlog_over_spare_capacity(backlog, mu, lam, consumers, expected):
    assert drain_time(backlog, mu, lam, consumers=consumers) == pytest.approx(expected)


@pytest.mark.parametrize(("mu", "lam"), [(50, 50), (40, 50)])
def test_drain_time_is_infinite_without_spare_capacity(mu, lam):
    assert drain_time(300, mu, lam) == math.inf


def test_drain_time_adds_the_startup_delay_and_its_arrivals():
    # 1 s of start-up at 20 msg/s adds 20 messages to the 300 waiting: 320 / (100 - 20).
    assert drain_time(300, 100, 20, startup_delay=1.0) == pytest.approx(1.0 + 320 / 80)


@pytest.mark.parametrize("kwargs", [
    {"backlog": -1, "service_rate": 10},
    {"backlog": 10, "service_rate": 0},
    {"backlog": 10, "service_rate": 10, "arrival_rate": -1},
    {"backlog": 10, "service_rate": 10, "consumers": 0},
])
def test_drain_time_rejects_nonsense(kwargs):
    with pytest.raises(ValueError):
        drain_time(**kwargs)


def test_littles_law_both_ways():
    assert littles_law_wait(mean_queue_length=10, arrival_rate=5) == pytest.approx(2.0)
    assert littles_law_length(arrival_rate=5, mean_wait=2.0) == pytest.approx(10.0)
    with pytest.raises(ValueError):
        littles_law_wait(10, 0)


def test_utilisation():
    assert utilisation(50, 100) == pytest.approx(0.5)
    assert utilisation(150, 100, consumers=2) == pytest.approx(0.75)


# ---- arrivals ------------------------------------------------------------------------------


def test_steady_arrivals_by_count_and_by_stop():
    assert steady_arrivals(4, count=3, start=1.0).tolist() == [1.0, 1.25, 1.5]
    assert len(steady_arrivals(10, stop=2.0)) == 20
    with pytest.raises(ValueError):
        steady_arrivals(10)


def test_random_arrivals_are_reproducible_from_the_seed():
    a = random_arrivals(50, seed=1, stop=20)
    assert np.array_equal(a, random_arrivals(50, seed=1, stop=20))
    assert not np.array_equal(a, random_arrivals(50, seed=2, stop=20))
    assert a.max() < 20 and np.all(np.diff(a) > 0)
    assert len(a) == pytest.approx(1000, rel=0.15)
    assert len(random_arrivals(50, seed=1, count=7)) == 7


# ---- simulation ----------------------------------------------------------------------------


def test_a_backlog_alone_drains_at_the_service_rate():
    p = simulate([], 100, backlog=300)
    assert p.drain_time_s == pytest.approx(3.0, abs=0.02)
    assert list(p.frame.columns[:2]) == ["t", "depth"]
    assert p.frame["depth"].iloc[0] == 300
    # Linear drain: halfway through, half the backlog is left.
    half = p.frame.loc[(p.frame["t"] - 1.5).abs().idxmin(), "depth"]
    assert half == pytest.approx(150, abs=1.5)


def test_simulation_agrees_with_the_closed_form_while_orders_keep_arriving():
    p = simulate(steady_arrivals(50, stop=30), 80, backlog=300)
    assert p.drain_time_s == pytest.approx(drain_time(300, 80, 50), rel=0.02)


def test_consumers_share_the_work():
    one = simulate([], 50, backlog=200).drain_time_s
    two = simulate([], 50, backlog=200, consumers=2).drain_time_s
    assert two == pytest.approx(one / 2, abs=0.02)


def test_an_outage_builds_a_backlog_that_drains_after_restart():
    arrivals = steady_arrivals(100, count=300, start=1.0)  # 1 s to 4 s
    p = simulate(arrivals, 80, outage=(0.5, 5.0), startup_delay=0.5)
    f = p.frame
    during = f[(f["t"] > 4.2) & (f["t"] < 5.4)]["depth"]
    assert during.min() == pytest.approx(300) and during.max() == pytest.approx(300)
    assert p.empty_at == pytest.approx(5.5 + 300 / 80, abs=0.02)
    assert p.drain_time_s == pytest.approx(0.5 + 300 / 80, abs=0.02)  # from the restart
    assert p.drain_time_s == pytest.approx(
        drain_time(300, 80, startup_delay=0.5), abs=0.02)


def test_prefetched_messages_leave_ready_only_while_the_consumer_runs():
    arrivals = steady_arrivals(100, count=300, start=1.0)
    plain = simulate(arrivals, 80, outage=(0.5, 5.0))
    held = simulate(arrivals, 80, outage=(0.5, 5.0), prefetch=50)
    down = (held.frame["t"] > 4.5) & (held.frame["t"] < 4.9)
    assert (held.frame.loc[down, "depth"] == 300).all()  # nothing is delivered while down
    after = held.frame["t"].between(5.5, 6.0)
    gap = plain.frame.loc[after, "depth"] - held.frame.loc[after, "depth"]
    assert np.allclose(gap, 50)
    assert held.drain_time_s == pytest.approx(plain.drain_time_s)  # prefetch is not speed


def test_overload_never_empties():
    p = simulate(steady_arrivals(100, stop=20), 80, backlog=10, until=10)
    assert p.empty_at == math.inf and p.drain_time_s == math.inf
    # 20 msg/s more than the consumer takes: the queue grows by 20 every second.
    assert p.frame["depth"].iloc[-1] == pytest.approx(10 + 10 * 20, abs=2)


def test_the_model_is_deterministic_and_conserves_messages():
    args = (steady_arrivals(60, stop=5), 40)
    a, b = simulate(*args, backlog=20), simulate(*args, backlog=20)
    pd.testing.assert_frame_equal(a.frame, b.frame)
    f = a.frame
    assert np.allclose(f["arrived"] - f["served"], f["in_system"])
    assert (f["depth"] >= 0).all() and (f["depth"] <= f["in_system"] + 1e-9).all()


def test_outage_must_end_after_it_starts():
    with pytest.raises(ValueError):
        Outage(2.0, 1.0)


# ---- measuring -----------------------------------------------------------------------------


def test_time_average_of_a_ramp_is_its_midpoint():
    f = pd.DataFrame({"t": np.linspace(0, 10, 101), "depth": np.linspace(0, 100, 101)})
    assert time_average(f) == pytest.approx(50)
    assert time_average(f, start=0, end=5) == pytest.approx(25)


def test_service_rates_from_completions_and_from_depth():
    assert service_rate_from_decisions([2.0, 1.0, 1.5]) == pytest.approx(2.0)
    f = pd.DataFrame({"t": np.arange(0, 10, 0.25)})
    f["depth"] = np.clip(300 - 60 * (f["t"] - 2), 0, 300)
    assert service_rate_from_depth(f, start=1.0) == pytest.approx(60, rel=0.01)


def test_startup_from_depth_is_the_first_fall_between_two_samples():
    f = pd.DataFrame({"t": np.arange(0, 10, 0.25)})
    f["depth"] = np.where(f["t"] < 2.1, 300, 250)  # a window taken between 2.0 and 2.25
    assert startup_from_depth(f, start=1.0) == pytest.approx(1.125)
    with pytest.raises(ValueError):
        startup_from_depth(f.assign(depth=300), start=1.0)  # it never falls


def fake_backlog_drain(mu: float = 80.0, startup: float = 0.6) -> SimpleNamespace:
    """A backlog-drain result as the scenario would build it, made by hand."""
    stop, restart = 1.0, 5.0
    arrivals = steady_arrivals(100, count=300, start=1.5)
    decided = restart + startup + np.arange(1, 301) / mu
    notify_ms = np.full(300, 5.0)
    t = np.arange(0, 10, 0.25)
    ready = np.where(t < restart + startup, np.searchsorted(arrivals, t, side="right"),
                     np.clip(300 - mu * (t - restart - startup), 0, None))
    return SimpleNamespace(
        summary=SimpleNamespace(drain_rate_msg_s=mu,
                                time_to_empty_s=round(decided[-1] - restart, 2),
                                backlog_peak=300, prefetch=0),
        frames={
            "orders": pd.DataFrame({"t_answered": arrivals + 0.01, "accepted": True}),
            "latency": pd.DataFrame({"t_notified": decided + notify_ms / 1000,
                                     "notify_ms": notify_ms}),
            "queue_depth": pd.DataFrame({"t": t, "queue": "order_placed", "ready": ready}),
        },
        timeline=pd.DataFrame({"t": [stop, restart], "kind": ["stop", "start"],
                               "target": ["inventory", "inventory"], "detail": ["", ""]}),
    )


def test_measure_backlog_drain_reads_the_models_inputs_back():
    m = measure_backlog_drain(fake_backlog_drain(mu=80, startup=0.6))
    assert m.service_rate == 80 and m.backlog == 300
    assert m.outage == Outage(1.0, 5.0)
    assert m.startup_delay == pytest.approx(0.6, abs=1e-6)
    assert len(m.arrivals) == 300 and list(m.depth.columns) == ["t", "depth"]
    p = m.predict()
    assert p.drain_time_s == pytest.approx(m.drain_time_s, abs=0.03)
    assert m.predict(consumers=2).drain_time_s == pytest.approx(0.6 + 300 / 160, abs=0.03)


def test_measure_falls_back_to_the_completion_times_without_a_summary_rate():
    result = fake_backlog_drain(mu=50, startup=0.3)
    result.summary.drain_rate_msg_s = None
    assert measure_backlog_drain(result).service_rate == pytest.approx(50)
