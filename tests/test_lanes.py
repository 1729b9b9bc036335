"""Lanes (pure logic, with stand-in brokers): which scenarios run on a node of their own,
what happens when none can be started, and the card's order whichever lane ran what."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from harness.brokers import BrokerError, BrokerSettings
from harness.grading.grade import ScenarioGrade, _in_card_order
from harness.scenarios import lanes
from harness.scenarios.registry import Scenario


def _sc(name: str, restarts: bool = False) -> Scenario:
    return Scenario(name, lambda *a, **k: None, black_box=True,
                    needs_restartable_broker=restarts)


LOCAL = SimpleNamespace(provider="local", can_stop=True, settings=BrokerSettings())
PLAN = [_sc("baseline"), _sc("reconnect", True), _sc("duplicates"), _sc("chaos", True)]


def test_only_scenarios_that_restart_the_broker_go_aside_and_only_when_it_helps():
    assert [s.name for s in lanes.aside(PLAN, LOCAL, None)] == ["reconnect", "chaos"]
    assert lanes.aside(PLAN, LOCAL, False) == []  # --one-node
    url = SimpleNamespace(provider="url", can_stop=False)
    assert lanes.aside(PLAN, url, None) == []  # no cheap second node of a URL broker
    alone = [_sc("reconnect", True)]
    assert lanes.aside(alone, LOCAL, None) == []  # nothing else would run meanwhile


def test_a_scenario_whose_node_cannot_start_runs_on_the_shared_broker_after_the_others(
        monkeypatch):
    import harness.brokers as brokers

    def no_node(*args, **kwargs):
        raise BrokerError("node lab-x exited with code 1 while starting")
    monkeypatch.setattr(brokers, "open_broker", no_node)
    ran: list[tuple[str, object]] = []
    lock = threading.Lock()

    def run(sc, on):
        with lock:
            ran.append((sc.name, on))
    own = lanes.aside(PLAN, LOCAL, None)
    lanes.run_lanes(LOCAL, PLAN, own, run)
    # Never beside the others on the broker they share: after them, one at a time.
    assert [n for n, _ in ran[:2]] == ["baseline", "duplicates"]
    assert sorted(n for n, _ in ran[2:]) == ["chaos", "reconnect"]
    assert all(on is LOCAL for _, on in ran)


def _grade(name: str, failed: bool = False) -> ScenarioGrade:
    return ScenarioGrade(name, "", [], start_failed=failed)


def test_the_card_keeps_its_order_and_stops_after_a_service_that_never_came_up():
    graded = {"chaos": _grade("chaos"), "reconnect": _grade("reconnect"),
              "baseline": _grade("baseline"), "duplicates": _grade("duplicates")}
    assert [g.name for g in _in_card_order(PLAN, graded, [])] == [s.name for s in PLAN]
    # duplicates never came up; chaos ran on its own node meanwhile, but reads as skipped,
    # as it would have been one scenario after another.
    graded["duplicates"] = _grade("duplicates", failed=True)
    card = _in_card_order(PLAN, graded, ["duplicates"])
    assert card[2] is graded["duplicates"]
    assert card[3].checks[0].evidence == {"skipped": True}
    assert "never came up in duplicates" in card[3].checks[0].happened


def test_a_scenario_the_main_lane_never_reached_says_where_it_stopped():
    graded = {"baseline": _grade("baseline", failed=True), "reconnect": _grade("reconnect")}
    card = _in_card_order(PLAN, graded, ["baseline"])
    assert card[0] is graded["baseline"]
    assert all("never came up in baseline" in g.checks[0].happened for g in card[1:])


def test_by_default_lanes_are_off_for_a_cluster():
    cluster = SimpleNamespace(provider="local-cluster", can_stop=True)
    assert lanes.aside(PLAN, cluster, None) == []
