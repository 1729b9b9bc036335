"""The scenario registry: metadata in one place, white-box scenarios refuse other impls."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import cli, scenarios
from harness.lab.impl import load_impl
from harness.scenarios import registry

ROOT = Path(__file__).resolve().parents[1]
BLACK_BOX = {"baseline", "backlog-drain", "reconnect", "duplicates", "restart-idempotency",
             "malformed", "kill-9", "chaos", "stock-exhaustion", "broker-nacks"}


def test_the_registry_knows_every_scenario_and_which_are_black_box():
    known = registry.scenarios()
    assert {s.name for s in registry.black_box()} >= BLACK_BOX
    white = ("idempotency", "crash-window", "dlq")
    assert set(white) <= set(known)
    assert not any(known[n].black_box for n in white)
    assert known["reconnect"].needs_restartable_broker
    assert known["chaos"].needs_restartable_broker  # registered from its own module
    assert list(known)[0] == "baseline"
    # The CLI lists what the registry holds.
    choices = cli.build_parser()._subparsers._group_actions[0].choices["run"]._actions
    assert set(known) <= set(next(a for a in choices if a.dest == "scenario").choices)


def test_a_module_registers_a_scenario_with_one_call():
    def fake(broker=None, **kw):
        return None
    try:
        registry.register(registry.Scenario("fake-chaos", fake, black_box=True, rank=99))
        assert registry.get("fake-chaos").function is fake
        assert "fake-chaos" in {s.name for s in registry.black_box()}
    finally:
        registry._SCENARIOS.pop("fake-chaos", None)


@pytest.mark.parametrize("fn", [scenarios.idempotency, scenarios.crash_window, scenarios.dlq,
                                scenarios.scale_out])
def test_white_box_scenarios_refuse_another_implementation(fn, tmp_path):
    impl = load_impl(ROOT / "examples/naive/impl.toml")
    with pytest.raises(registry.WhiteBoxOnly, match="white-box.*naive"):
        fn(object(), impl=impl, out=tmp_path)


def test_old_imports_keep_working():
    from harness.scenarios import POISON_USER, backlog_drain, baseline, drain_stats  # noqa: F401
    assert callable(scenarios.reconnect) and scenarios.POISON_USER == POISON_USER
