"""Grade an implementation: run every black-box scenario against it and write a report card.

    python -m harness grade --impl examples/naive/impl.toml

The card is a run folder with `report.md`, a self-contained `report.html` (charts embedded)
and `report.json`: one row per check (what was tried, what was expected, what happened,
with evidence), and a summary table. A service that never becomes healthy, crashes at start
or times out is reported as such with its log tail, never as a harness traceback.
"""

from __future__ import annotations

import contextlib
import io
import logging
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from harness.brokers.netns import netns_available
from harness.grading import gaps as contract
from harness.grading import verdicts
from harness.invariants import Check
from harness.lab import ServiceFailed
from harness.lab.impl import Impl, resolve
from harness.ports import port_free
from harness.reporting.card import html_page, mark, markdown, not_judged, skipped, write_card
from harness.reporting.results import ScenarioResult, _jsonable, run_folder
from harness.scenarios import lanes, registry
from harness.waiting import WaitTimeout

# The card's rendering lives in harness.reporting.card; these names stay importable here.
__all__ = ["ReportCard", "ScenarioGrade", "grade", "html_page", "markdown", "write_card"]

log = logging.getLogger(__name__)


@dataclass
class ScenarioGrade:
    """One scenario's part of the card: its checks, its charts, or why it could not run."""

    name: str
    summary: str
    checks: list[Check]
    charts: dict[str, bytes] = field(default_factory=dict)  # PNG bytes by figure name
    run_dir: Path | None = None
    error: str | None = None
    log_tail: str | None = None
    gaps: list[contract.ContractGap] = field(default_factory=list)
    start_failed: bool = False  # a service never came up at the lab's start


@dataclass
class ReportCard:
    """Every check of every black-box scenario against one implementation."""

    impl: str
    spec: str | None
    broker: str
    scenarios: list[ScenarioGrade]
    run_dir: Path
    started: str
    # Contract gaps (harness.grading.gaps.summarise): listed first, "fix this first".
    gaps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def checks(self) -> list[Check]:
        """Every check, scenario by scenario."""
        return [c for s in self.scenarios for c in s.checks]

    @property
    def passed(self) -> bool:
        """True iff no contract gap, no check failed and none could not be run (skips do not
        fail)."""
        return not self.gaps and all(c.passed is True or skipped(c) for c in self.checks)

    def counts(self) -> dict[str, int]:
        """Checks passed, failed, not run (error or time-out), skipped, and not judged (a
        contract gap hid what they need); and the contract gaps."""
        out = {"passed": 0, "failed": 0, "not_run": 0, "skipped": 0, "not_judged": 0}
        for c in self.checks:
            key = ("passed" if c.passed else "failed" if c.passed is False
                   else "skipped" if skipped(c) else "not_judged" if not_judged(c)
                   else "not_run")
            out[key] += 1
        out["contract_gaps"] = len(self.gaps)
        return out

    def to_dict(self) -> dict[str, Any]:
        """The card as JSON-able data."""
        return _jsonable({
            "impl": self.impl, "spec": self.spec, "broker": self.broker, "started": self.started,
            "passed": self.passed, "counts": self.counts(), "run_dir": str(self.run_dir),
            "contract_gaps": self.gaps,
            "scenarios": [{"name": s.name, "summary": s.summary, "error": s.error,
                           "log_tail": s.log_tail,
                           "run_dir": str(s.run_dir) if s.run_dir else None,
                           "checks": [c.to_dict() for c in s.checks]} for s in self.scenarios],
        })

    def text(self) -> str:
        """A terminal summary: one line per check."""
        lines = [f"== report card: {self.impl} =="]
        if self.gaps:
            lines.append("  fix this first (contract gaps):")
            lines += [f"  GAP      {g['what']} {g['detail']} "
                      f"({len(g['checks_not_judged'])} checks not judged)" for g in self.gaps]
        for c in self.checks:
            lines.append(f"  {mark(c):<8} {c.scenario:<20} {c.name}")
            if not_judged(c):  # its cause is the gap listed above: named, not repeated
                lines.append(f"           (contract gap: {', '.join(c.evidence['contract_gap'])})")
            elif c.passed is not True:
                lines.append(f"           {c.happened}")
            tail = [t for t in str(c.evidence.get("log_tail") or "").splitlines() if t.strip()]
            lines += [f"           | {t}" for t in tail[-3:]]
        n = self.counts()
        lines.append(f"  {n['passed']} passed, {n['failed']} failed, {n['not_run']} could not "
                     f"run, {n['skipped']} skipped, {n['not_judged']} not judged, "
                     f"{n['contract_gaps']} contract gaps")
        lines.append(f"  report: {self.run_dir / 'report.html'}")
        return "\n".join(lines)


# ---- running ----------------------------------------------------------------------------


@contextlib.contextmanager
def _broker_for_impl(impl: Impl, broker: Any, kind: str,
                     settings: dict[str, Any]) -> Iterator[Any]:
    """The broker to grade on: the given one, or one opened with `settings` (_own_settings),
    of its own for a vhost-blind implementation (it takes the default vhost, and connects as
    the user its spec names)."""
    from harness.brokers import open_broker
    if impl.honours_vhost and broker is not None:
        yield broker
        return
    if broker is not None:
        kind = getattr(broker, "provider", kind)
        if kind == "url":
            raise ValueError(f"{impl.name} does not honour vhosts, so it needs a broker of its "
                             "own, and a URL broker cannot be had fresh: use --broker local, "
                             "docker or auto")
    with open_broker(kind, **settings) as own:
        yield own


def _own_settings(impl: Impl) -> dict[str, Any]:
    """The settings of a broker opened for `impl`: its user, and its fixed port if it has
    one and no namespace can forward it."""
    settings: dict[str, Any] = {"username": impl.user, "password": impl.password}
    if impl.broker_port is not None and not netns_available()[0] \
            and port_free(impl.broker_port):
        # No namespace to forward it in: the broker itself on the port the code expects.
        settings["amqp_port"] = impl.broker_port
    return settings


def _spares(broker: Any, kind: str, settings: dict[str, Any],
            chosen: list[registry.Scenario], asked: bool | None) -> lanes.Spares | None:
    """Nodes for the scenarios that restart the broker, booted now alongside the broker
    this grade opens with `settings`, when that will be a local node and they will run on
    nodes of their own (`lanes.aside`, as for a local node); None otherwise."""
    from harness.brokers import provider_of
    if broker is not None or asked is False:
        return None
    aside = lanes.aside(chosen, None, True)
    if not aside or provider_of(kind, **settings) != "local":
        return None
    return lanes.Spares(len(aside), settings)


def grade(impl: Impl | str | Path | None = None, broker: Any = None, *,
          orders: int | None = None, small: bool = False, out: str | Path = "runs",
          only: list[str] | None = None, broker_kind: str = "auto",
          progress: bool = True, scenario_kwargs: dict[str, dict[str, Any]] | None = None,
          own_node_for_restarts: bool | None = False) -> ReportCard:
    """Run every black-box scenario against `impl` and write the report card.

    Args:
        impl: an Impl, a path to impl.toml (or its folder), or None for the lab's own.
        broker: a started broker (default: one opened with `broker_kind`).
        orders: orders per scenario that takes them (default: each scenario's own size).
        small: CI-sized runs (each scenario's `ci_kwargs`); `orders` still wins.
        out: folder for the card's run folder.
        only: names of the scenarios to run (default: every black-box one).
        scenario_kwargs: per scenario name, keyword arguments that win over the sizes
            above (tests use it to keep a run short, e.g. {"chaos": {"settle_s": 20}}).
        own_node_for_restarts: run each scenario that restarts the broker on a local node
            of its own, alongside the others; None: when the broker is a local node (what
            `python -m harness grade` does unless `--one-node`). With it, the other
            scenarios run two at a time on the shared broker, each in a vhost of its own,
            for an implementation that honours vhosts and has no fixed address. The card has
            the same scenarios and checks, in the same order, either way (chaos, being
            timed by its seed and not by the work, is harsher on a busy machine). Off by
            default here, so that callers that already run grades side by side (tests in
            parallel workers, `grade-class`) do not triple their nodes.
    """
    spec = resolve(impl)
    chosen = registry.black_box()
    if only:
        known = {s.name: s for s in registry.scenarios().values()}
        missing = [n for n in only if n not in known]
        if missing:
            raise KeyError(f"no scenario {missing[0]!r}; known: {', '.join(known)}")
        chosen = [known[n] for n in only]
    card_dir = run_folder(out, f"grade-{_slug(spec.name)}")
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    # Fixed addresses outside a namespace need the one broker put on their port.
    if spec.fixed_addresses and not netns_available()[0]:
        own_node_for_restarts = False
    settings = _own_settings(spec)
    spares = _spares(broker, broker_kind, settings, chosen, own_node_for_restarts)
    with contextlib.ExitStack() as stack:
        if spares is not None:
            stack.callback(spares.close)
        b = stack.enter_context(_broker_for_impl(spec, broker, broker_kind, settings))
        graded: dict[str, ScenarioGrade] = {}
        stopped: list[str] = []  # the main lane stops at a service that never came up

        def run(sc: registry.Scenario, on: Any) -> None:
            if stopped and on is b:
                return
            log.info("grading %s: %s", spec.name, sc.name)
            graded[sc.name] = _grade_one(sc, spec, on, card_dir, orders, small, progress,
                                         (scenario_kwargs or {}).get(sc.name, {}))
            if graded[sc.name].start_failed and on is b:
                stopped.append(sc.name)

        own_node = lanes.aside(chosen, b, own_node_for_restarts)
        # With lanes, the rest run two at a time on the shared broker, each in its own
        # vhost: only for an implementation that keeps to its vhost and its given ports.
        side = (lanes.SIDE_BY_SIDE if lanes.use_lanes(b, own_node_for_restarts)
                and spec.honours_vhost and not spec.fixed_addresses else 1)
        lanes.run_lanes(b, chosen, own_node, run, side_by_side=side, spares=spares)
        grades = _in_card_order(chosen, graded, stopped)
        broker_name = f"{getattr(b, 'provider', '?')}"
    found = contract.summarise([(g.name, g.gaps, g.checks) for g in grades])
    card = ReportCard(spec.name, str(spec.path) if spec.path else None, broker_name, grades,
                      card_dir, started, found)
    write_card(card)
    return card


def _in_card_order(chosen: list[registry.Scenario], graded: dict[str, ScenarioGrade],
                   stopped: list[str]) -> list[ScenarioGrade]:
    """The grades in the card's order; after the first scenario whose services never came
    up, the rest say so instead (one finding, not the same one per scenario), whichever
    lane ran them; so does one the shared broker's lane never reached (`stopped`: where it
    stopped, shown with its evidence even when scenarios before it in the card never ran,
    as when two ran side by side, the last first)."""
    grades: list[ScenarioGrade] = []
    first = stopped[0] if stopped else None
    stop: str | None = None
    for sc in chosen:
        grade = graded.get(sc.name)
        if grade is not None and (stop is None or sc.name == first):
            grades.append(grade)
            if grade.start_failed and stop is None:
                stop = f"not run, since a service never came up in {sc.name} (see there)"
            continue
        if stop is None:
            stop = f"not run, since a service never came up in {first} (see there)"
        grades.append(ScenarioGrade(sc.name, sc.summary, [Check(
            sc.name, "(scenario)", sc.summary, "-", f"skipped: {stop}", None,
            {"skipped": True})]))
    return grades


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in name)[:40] or "impl"


def _grade_one(sc: registry.Scenario, impl: Impl, broker: Any, card_dir: Path,
               orders: int | None, small: bool, progress: bool,
               extra: dict[str, Any]) -> ScenarioGrade:
    if sc.needs_cluster and len(broker.nodes) < 3:
        return ScenarioGrade(sc.name, sc.summary, [Check(
            sc.name, "(scenario)", sc.summary, "-",
            "skipped: it needs a 3-node cluster (--broker local-cluster)", None,
            {"skipped": True})])
    if sc.needs_restartable_broker and not broker.can_stop:
        return ScenarioGrade(sc.name, sc.summary, [Check(
            sc.name, "(scenario)", sc.summary, "-",
            f"skipped: it restarts the broker, and a {broker.provider} broker cannot be "
            "restarted by the harness", None, {"skipped": True})])
    kwargs: dict[str, Any] = dict(sc.ci_kwargs) if small else {}
    if orders is not None and sc.accepts_orders:
        kwargs["orders"] = orders
    kwargs.update(extra)
    folder = card_dir / "scenarios"
    try:
        result: ScenarioResult = sc.function(broker, out=folder, progress=progress, impl=impl,
                                             **kwargs)
    except Exception as exc:  # the card must still be written: say what broke, and where
        return _failed(sc, folder, exc)
    checks = result.checks or verdicts.split(
        sc.name, sc.summary, result.verdict, result.summary,
        contract.read_observed(result.run_dir)) or [Check(
            sc.name, "verdict", sc.summary, "the checker's verdict is valid",
            "valid" if result.valid else "; ".join(result.verdict.problems), result.valid,
            result.verdict.counts)]
    gaps = contract.read_gaps(result.run_dir)
    return ScenarioGrade(sc.name, sc.summary, contract.unjudge(checks, gaps), _pngs(result),
                         result.run_dir, gaps=gaps)


def _failed(sc: registry.Scenario, folder: Path, exc: Exception) -> ScenarioGrade:
    """The card's row for a scenario that raised: a contract gap when it shows one."""
    gaps = contract.read_gaps(_latest(folder, sc.name))
    gap = contract.gap_of(exc)
    if gap is not None and all(g.what != gap.what for g in gaps):
        gaps.append(gap)
    if gap is not None:
        grade = _not_run(sc, folder, f"not judged: the scenario needs {gap.what} "
                         f"({gap.detail})", None)
        grade.checks[0].evidence.update({"not_judged": True, "contract_gap": [gap.what]})
    elif isinstance(exc, ServiceFailed):
        grade = _not_run(sc, folder, f"the {exc.service} service {exc.what}", exc.log_tail)
        grade.start_failed = exc.at_start
        grade.checks[0].evidence.update({"service": exc.service,
                                         "port_opened": exc.port_opened})
    elif isinstance(exc, WaitTimeout):
        grade = _not_run(sc, folder, f"timed out: {exc}", _log_tails(folder, sc.name))
    elif isinstance(exc, requests.RequestException):
        grade = _not_run(sc, folder, f"a service did not answer over HTTP as the contract "
                         f"says ({exc.__class__.__name__}: {exc})", _log_tails(folder, sc.name))
    elif isinstance(exc, registry.WhiteBoxOnly):
        grade = _not_run(sc, folder, str(exc), None)
    else:
        log.warning("%s failed:\n%s", sc.name, traceback.format_exc())
        grade = _not_run(sc, folder, f"the scenario could not finish ({exc.__class__.__name__}"
                         f": {exc})", _log_tails(folder, sc.name))
    grade.gaps = gaps
    return grade


def _not_run(sc: registry.Scenario, folder: Path, what: str, tail: str | None) -> ScenarioGrade:
    check = Check(sc.name, "(scenario)", sc.summary, "the scenario runs to its end",
                  what, None, {"log_tail": tail or ""})
    return ScenarioGrade(sc.name, sc.summary, [check], {}, _latest(folder, sc.name), what, tail)


def _latest(folder: Path, name: str) -> Path | None:
    found = sorted(folder.glob(f"{name}-*")) if folder.exists() else []
    return found[-1] if found else None


def _log_tails(folder: Path, name: str, lines: int = 15) -> str:
    run = _latest(folder, name)
    if run is None:
        return ""
    logs = run / "logs" if (run / "logs").exists() else run / "services"
    parts = []
    for logfile in sorted(logs.glob("*.log")):
        text = logfile.read_text(errors="replace").splitlines()[-lines:]
        parts.append(f"--- {logfile.name} ---\n" + "\n".join(text))
    return "\n".join(parts)


def _pngs(result: ScenarioResult) -> dict[str, bytes]:
    # The scenario wrote each chart as a PNG into its run folder: embed those, rendering
    # again only a chart that is not there.
    out = {}
    for name, fig in result.figures.items():
        written = result.run_dir / f"{name}.png" if result.run_dir else None
        if written is not None and written.exists():
            out[name] = written.read_bytes()
            continue
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80)
        out[name] = buf.getvalue()
    return out
