"""Autograding: `pytest --impl PATH` runs every black-box check against an implementation.

    python -m pytest tests/test_autograde.py --impl exercises/inventory/impl.toml

One test per scenario; a failing test lists its failed checks in the report card's words.
Without --impl these tests are left out (see conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.grading.grade import grade
from harness.lab.impl import load_impl
from harness.scenarios import registry

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "scenario_name" in metafunc.fixturenames:
        metafunc.parametrize("scenario_name", [s.name for s in registry.black_box()])


def test_scenario(scenario_name, broker, request, tmp_path_factory):
    impl = load_impl(Path(request.config.getoption("--impl")))
    small = request.config.getoption("--impl-size") == "small"
    card = grade(impl, broker, only=[scenario_name], small=small,
                 out=tmp_path_factory.mktemp("autograde"), progress=False)
    bad = [c for c in card.checks if c.passed is not True and not c.evidence.get("skipped")]
    lines = [f"CONTRACT GAP (fix this first) {g['what']} {g['detail']}" for g in card.gaps]
    for c in bad:
        lines.append(f"{'FAIL' if c.passed is False else 'COULD NOT RUN'} {c.name}: {c.happened}")
        if c.evidence.get("log_tail"):
            lines.append("  log tail:\n  " + "\n  ".join(c.evidence["log_tail"].splitlines()[-8:]))
    assert not bad and not card.gaps, \
        f"{impl.name}, {scenario_name} (card: {card.run_dir}):\n" + "\n".join(lines)
