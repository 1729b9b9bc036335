"""Every scenario with its metadata, in one place: the CLI, `run all` and `grade` read it.

A scenario registers itself where it is defined, with one call:

    register(Scenario("chaos", chaos, black_box=True, needs_restartable_broker=True))

Every module of the `harness.scenarios` package is imported on first use of the registry
(package discovery), so a new scenario is one file with its `register(...)` line and nothing
else: no list elsewhere to keep in step.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.lab.impl import Impl

# quick: every scenario small enough for a first `run all` (and CI); full: class size.
SIZES = ("quick", "full")
# Modules of the package that hold shared code, not scenarios.
NOT_SCENARIOS = frozenset({"registry", "common", "summary", "held_outcomes"})


class WhiteBoxOnly(ValueError):
    """A white-box scenario was asked to run on an implementation other than the lab's."""


@dataclass(frozen=True)
class Scenario:
    """A scenario function and what it needs.

    Args:
        name: the CLI name (kebab-case).
        function: `fn(broker=None, *, out=..., progress=..., impl=..., [orders=...], **lab)`.
        black_box: drives only HTTP, AMQP and process control, so it can grade any
            implementation; white-box scenarios use the lab's own knobs.
        needs_restartable_broker: stops or kills the broker (not possible on a URL broker).
        needs_cluster: needs a broker of several nodes (`--broker local-cluster`).
        accepts_orders: takes `orders=N`.
        ci_kwargs: keyword arguments that make a quick run (few orders, short holds): CI
            and a newcomer's `run all` use it.
        full_kwargs: keyword arguments of the class-size run, where they differ from the
            function's own defaults (`run NAME` and `run all --size full` use it).
        summary: what the scenario shows, in a line.
        rank: position in listings and in `run all` (lower first).
    """

    name: str
    function: Callable[..., Any]
    black_box: bool
    needs_restartable_broker: bool = False
    needs_cluster: bool = False
    accepts_orders: bool = True
    ci_kwargs: dict[str, Any] = field(default_factory=dict)
    full_kwargs: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    rank: int = 100


_SCENARIOS: dict[str, Scenario] = {}
_discovered = False


def register(scenario: Scenario) -> Scenario:
    """Add a scenario (replacing one of the same name, so a reload is harmless)."""
    _SCENARIOS[scenario.name] = scenario
    return scenario


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    import harness.scenarios as package
    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in NOT_SCENARIOS:
            importlib.import_module(f"{package.__name__}.{info.name}")


def scenarios() -> dict[str, Scenario]:
    """Every registered scenario, by name, in registration order."""
    _discover()
    return {s.name: s for s in sorted(_SCENARIOS.values(), key=lambda s: s.rank)}


def get(name: str) -> Scenario:
    """One scenario by name; KeyError lists the known ones."""
    found = scenarios().get(name)
    if found is None:
        raise KeyError(f"no scenario {name!r}; known: {', '.join(scenarios())}")
    return found


def sized_kwargs(scenario: Scenario, size: str) -> dict[str, Any]:
    """The keyword arguments of a `quick` or a `full` run of a scenario."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, not {size!r}")
    return dict(scenario.ci_kwargs if size == "quick" else scenario.full_kwargs)


def black_box() -> list[Scenario]:
    """The scenarios that can judge any implementation."""
    return [s for s in scenarios().values() if s.black_box]


def require_lab(impl: Impl, scenario: str) -> None:
    """Raise WhiteBoxOnly unless every service is the lab's own."""
    if not impl.is_lab:
        raise WhiteBoxOnly(
            f"the {scenario} scenario is white-box: it uses the lab's own knobs (crash points, "
            f"idempotency modes, WORK_MS, a poison user) and runs only on the lab's own "
            f"services, not on {impl.describe()}. The black-box scenarios are: "
            f"{', '.join(s.name for s in black_box())}")
