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


def test_side_by_side_two_run_at_once_the_last_first_and_a_failure_is_raised():
    plan = [_sc(n) for n in ("baseline", "stock", "backlog", "duplicates", "kill-9")]
    running: list[str] = []
    most = [0]
    started: list[str] = []
    lock = threading.Lock()
    both = threading.Barrier(2, timeout=10)

    def run(sc, on):
        with lock:
            started.append(sc.name)
            running.append(sc.name)
            most[0] = max(most[0], len(running))
        if len(started) <= 2:
            both.wait()  # the first two are under way together
        with lock:
            running.remove(sc.name)
    lanes.in_turn(plan, LOCAL, run, side_by_side=2)
    assert most[0] == 2 and sorted(started) == sorted(s.name for s in plan)
    assert set(started[:2]) == {"kill-9", "duplicates"}  # the fault scenarios come last
    alone: list[str] = []
    lanes.in_turn(plan, LOCAL, lambda sc, on: alone.append(sc.name), side_by_side=1)
    assert alone == [s.name for s in plan]

    def broken(sc, on):
        if sc.name == "backlog":
            raise RuntimeError("backlog broke")
    try:
        lanes.in_turn(plan, LOCAL, broken, side_by_side=2)
    except RuntimeError as exc:
        assert "backlog broke" in str(exc)
    else:
        raise AssertionError("a scenario's exception was swallowed")


def test_a_start_failure_late_in_the_card_keeps_its_evidence_when_it_ran_first():
    # Side by side, chaos-free plan run last first: duplicates never came up, baseline was
    # never reached.
    graded = {"duplicates": _grade("duplicates", failed=True), "chaos": _grade("chaos"),
              "reconnect": _grade("reconnect")}
    card = _in_card_order(PLAN, graded, ["duplicates"])
    assert card[2] is graded["duplicates"]
    assert all("never came up in duplicates" in card[i].checks[0].happened
               for i in (0, 1, 3))


def test_spares_boot_ahead_are_handed_out_once_and_the_rest_closed(monkeypatch):
    import harness.brokers as brokers
    opened: list[SimpleNamespace] = []
    asked: list[dict] = []

    def fake_open(kind, **settings):
        assert kind == "local"
        asked.append(settings)
        node = SimpleNamespace(closed=False)
        node.close = lambda: setattr(node, "closed", True)
        opened.append(node)
        return node
    monkeypatch.setattr(brokers, "open_broker", fake_open)
    spares = lanes.Spares(2, {"username": "u", "password": "p", "amqp_port": 5672})
    first = spares.take()
    assert first in opened and not first.closed
    spares.close()
    assert spares.take() is None
    assert [n.closed for n in opened if n is not first] == [True]
    # Each spare is a node of its own: its own name and ports, the given user.
    assert all(s["amqp_port"] is None and s["node_name"] is None and s["username"] == "u"
               for s in asked)
