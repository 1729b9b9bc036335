"""Grade an implementation: run every black-box scenario against it and write a report card.

    python -m harness grade --impl examples/naive/impl.toml

The card is a run folder with `report.md`, a self-contained `report.html` (charts embedded)
and `report.json`: one row per check (what was tried, what was expected, what happened,
with evidence), and a summary table. A service that never becomes healthy, crashes at start
or times out is reported as such with its log tail, never as a harness traceback.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import logging
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from harness.invariants import Check
from harness.lab import ServiceFailed
from harness.lab.impl import Impl, resolve
from harness.reporting.results import ScenarioResult, _jsonable, run_folder
from harness.scenarios import registry
from harness.waiting import WaitTimeout

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


@dataclass
class ReportCard:
    """Every check of every black-box scenario against one implementation."""

    impl: str
    spec: str | None
    broker: str
    scenarios: list[ScenarioGrade]
    run_dir: Path
    started: str

    @property
    def checks(self) -> list[Check]:
        """Every check, scenario by scenario."""
        return [c for s in self.scenarios for c in s.checks]

    @property
    def passed(self) -> bool:
        """True iff no check failed and none could not be run (skips do not fail)."""
        return all(c.passed is True or _skipped(c) for c in self.checks)

    def counts(self) -> dict[str, int]:
        """Checks passed, failed, not run (error or time-out) and skipped."""
        out = {"passed": 0, "failed": 0, "not_run": 0, "skipped": 0}
        for c in self.checks:
            key = ("passed" if c.passed else "failed" if c.passed is False
                   else "skipped" if _skipped(c) else "not_run")
            out[key] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        """The card as JSON-able data."""
        return _jsonable({
            "impl": self.impl, "spec": self.spec, "broker": self.broker, "started": self.started,
            "passed": self.passed, "counts": self.counts(), "run_dir": str(self.run_dir),
            "scenarios": [{"name": s.name, "summary": s.summary, "error": s.error,
                           "log_tail": s.log_tail,
                           "run_dir": str(s.run_dir) if s.run_dir else None,
                           "checks": [c.to_dict() for c in s.checks]} for s in self.scenarios],
        })

    def text(self) -> str:
        """A terminal summary: one line per check."""
        lines = [f"== report card: {self.impl} =="]
        for c in self.checks:
            lines.append(f"  {_mark(c):<6} {c.scenario:<20} {c.name}")
            if c.passed is not True:
                lines.append(f"         {c.happened}")
            tail = [t for t in str(c.evidence.get("log_tail") or "").splitlines() if t.strip()]
            lines += [f"         | {t}" for t in tail[-3:]]
        n = self.counts()
        lines.append(f"  {n['passed']} passed, {n['failed']} failed, {n['not_run']} could not "
                     f"run, {n['skipped']} skipped")
        lines.append(f"  report: {self.run_dir / 'report.html'}")
        return "\n".join(lines)


def _skipped(c: Check) -> bool:
    return c.passed is None and c.evidence.get("skipped") is True


def _mark(c: Check) -> str:
    if c.passed:
        return "PASS"
    if c.passed is False:
        return "FAIL"
    return "SKIP" if _skipped(c) else "ERROR"


# ---- running ----------------------------------------------------------------------------


@contextlib.contextmanager
def _broker_for_impl(impl: Impl, broker: Any, kind: str) -> Iterator[Any]:
    """The broker to grade on: the given one, or a fresh one of its own for a vhost-blind
    implementation (it takes the default vhost, and connects as the user its spec names)."""
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
    with open_broker(kind, username=impl.user, password=impl.password) as own:
        yield own


def grade(impl: Impl | str | Path | None = None, broker: Any = None, *,
          orders: int | None = None, small: bool = False, out: str | Path = "runs",
          only: list[str] | None = None, broker_kind: str = "auto",
          progress: bool = True) -> ReportCard:
    """Run every black-box scenario against `impl` and write the report card.

    Args:
        impl: an Impl, a path to impl.toml (or its folder), or None for the lab's own.
        broker: a started broker (default: one opened with `broker_kind`).
        orders: orders per scenario that takes them (default: each scenario's own size).
        small: CI-sized runs (each scenario's `ci_kwargs`); `orders` still wins.
        out: folder for the card's run folder.
        only: names of the scenarios to run (default: every black-box one).
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
    grades: list[ScenarioGrade] = []
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    with _broker_for_impl(spec, broker, broker_kind) as b:
        for sc in chosen:
            log.info("grading %s: %s", spec.name, sc.name)
            grades.append(_grade_one(sc, spec, b, card_dir, orders, small, progress))
        broker_name = f"{getattr(b, 'provider', '?')}"
    card = ReportCard(spec.name, str(spec.path) if spec.path else None, broker_name, grades,
                      card_dir, started)
    write_card(card)
    return card


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in name)[:40] or "impl"


def _grade_one(sc: registry.Scenario, impl: Impl, broker: Any, card_dir: Path,
               orders: int | None, small: bool, progress: bool) -> ScenarioGrade:
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
    folder = card_dir / "scenarios"
    try:
        result: ScenarioResult = sc.function(broker, out=folder, progress=progress, impl=impl,
                                             **kwargs)
    except ServiceFailed as exc:
        return _not_run(sc, folder, f"the {exc.service} service {exc.what}", exc.log_tail)
    except WaitTimeout as exc:
        return _not_run(sc, folder, f"timed out: {exc}", _log_tails(folder, sc.name))
    except requests.RequestException as exc:
        return _not_run(sc, folder, f"a service did not answer over HTTP as the contract says "
                        f"({exc.__class__.__name__}: {exc})", _log_tails(folder, sc.name))
    except registry.WhiteBoxOnly as exc:
        return _not_run(sc, folder, str(exc), None)
    except Exception as exc:  # the card must still be written: say what broke, and where
        log.warning("%s failed:\n%s", sc.name, traceback.format_exc())
        return _not_run(sc, folder, f"the scenario could not finish ({exc.__class__.__name__}: "
                        f"{exc}); the implementation may answer in a shape the contract does "
                        "not allow", _log_tails(folder, sc.name))
    checks = result.checks or [Check(
        sc.name, "verdict", sc.summary, "the checker's verdict is valid",
        "valid" if result.valid else "; ".join(result.verdict.problems), result.valid,
        result.verdict.counts)]
    return ScenarioGrade(sc.name, sc.summary, checks, _pngs(result), result.run_dir)


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
    out = {}
    for name, fig in result.figures.items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80)
        out[name] = buf.getvalue()
    return out


# ---- writing ----------------------------------------------------------------------------


def write_card(card: ReportCard) -> None:
    """Write report.json, report.md and report.html into the card's run folder."""
    card.run_dir.mkdir(parents=True, exist_ok=True)
    (card.run_dir / "report.json").write_text(json.dumps(card.to_dict(), indent=2) + "\n")
    (card.run_dir / "report.md").write_text(markdown(card))
    (card.run_dir / "report.html").write_text(html_page(card), encoding="utf-8")


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", "<br>")


def _evidence(c: Check) -> str:
    ev = {k: v for k, v in c.evidence.items() if k not in ("log_tail", "skipped") and v}
    return ", ".join(f"{k}: {v}" for k, v in ev.items())


def markdown(card: ReportCard) -> str:
    """The card as Markdown (charts linked from the scenarios' run folders)."""
    n = card.counts()
    lines = [f"# Report card: {card.impl}", "",
             f"Spec `{card.spec or 'built in (the lab)'}`, broker {card.broker}, "
             f"{card.started}.", "",
             f"**{'PASSED' if card.passed else 'FAILED'}**: {n['passed']} passed, "
             f"{n['failed']} failed, {n['not_run']} could not run, {n['skipped']} skipped.", "",
             "| scenario | passed | failed | could not run |", "|---|---|---|---|"]
    for s in card.scenarios:
        marks = [_mark(c) for c in s.checks]
        lines.append(f"| {s.name} | {marks.count('PASS')} | {marks.count('FAIL')} | "
                     f"{marks.count('ERROR')} |")
    failing = [c for c in card.checks if c.passed is not True and not _skipped(c)]
    if failing:
        lines += ["", "## What to fix", ""]
        lines += [f"- **{_md(c.scenario)}: {_md(c.name)}**: {_md(c.happened)}" for c in failing]
    lines += ["", "## Every check", "",
              "| scenario | check | tried | expected | happened | verdict | evidence |",
              "|---|---|---|---|---|---|---|"]
    for c in card.checks:
        lines.append(f"| {_md(c.scenario)} | {_md(c.name)} | {_md(c.tried)} | "
                     f"{_md(c.expected)} | {_md(c.happened)} | {_mark(c)} | "
                     f"{_md(_evidence(c))} |")
    for s in card.scenarios:
        if s.log_tail:
            lines += ["", f"## {s.name}: log tail", "", "```", s.log_tail, "```"]
        if s.run_dir and s.charts:
            rel = s.run_dir.relative_to(card.run_dir)
            lines += ["", f"## {s.name}", ""]
            lines += [f"![{name}]({rel}/{name}.png)" for name in s.charts]
    return "\n".join(lines) + "\n"


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;
vertical-align:top;text-align:left}tr.PASS td.verdict{background:#dfd}
tr.FAIL td.verdict{background:#fdd}tr.ERROR td.verdict{background:#fec}
pre{background:#f6f6f6;padding:8px;overflow:auto;max-height:20em}img{max-width:100%}
"""


def html_page(card: ReportCard) -> str:
    """The card as one self-contained HTML page: every chart is an embedded PNG."""
    e = html.escape
    n = card.counts()
    out = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
           f"<title>Report card: {e(card.impl)}</title><style>{_CSS}</style></head><body>",
           f"<h1>Report card: {e(card.impl)}</h1>",
           f"<p>Spec <code>{e(card.spec or 'built in (the lab)')}</code>, broker "
           f"{e(card.broker)}, {e(card.started)}.</p>",
           f"<p id='verdict' data-passed='{str(card.passed).lower()}'><strong>"
           f"{'PASSED' if card.passed else 'FAILED'}</strong>: {n['passed']} passed, "
           f"{n['failed']} failed, {n['not_run']} could not run, {n['skipped']} skipped.</p>",
           "<table id='summary'><tr><th>scenario</th><th>passed</th><th>failed</th>"
           "<th>could not run</th></tr>"]
    for s in card.scenarios:
        marks = [_mark(c) for c in s.checks]
        out.append(f"<tr><td>{e(s.name)}</td><td>{marks.count('PASS')}</td>"
                   f"<td>{marks.count('FAIL')}</td><td>{marks.count('ERROR')}</td></tr>")
    out.append("</table>")
    failing = [c for c in card.checks if c.passed is not True and not _skipped(c)]
    if failing:  # what to fix first, before the full table
        out.append("<h2>What to fix</h2><ul id='failures'>")
        out += [f"<li><strong>{e(c.scenario)}: {e(c.name)}</strong>: {e(c.happened)}</li>"
                for c in failing]
        out.append("</ul>")
    out.append("<h2>Every check</h2><table id='checks'><tr><th>scenario</th><th>check</th>"
               "<th>tried</th><th>expected</th><th>happened</th><th>verdict</th><th>evidence</th></tr>")
    for c in card.checks:
        mark = _mark(c)
        chart = (f" <a href='#chart-{e(c.scenario)}-{e(c.chart)}'>chart</a>"
                 if c.chart else "")
        tail = c.evidence.get("log_tail")
        logs = (f"<details><summary>log tail</summary><pre>{e(str(tail))}</pre></details>"
                if tail else "")
        out.append(f"<tr class='check {mark}' data-scenario='{e(c.scenario)}'>"
                   f"<td>{e(c.scenario)}</td><td>{e(c.name)}</td><td>{e(c.tried)}</td>"
                   f"<td>{e(c.expected)}</td><td>{e(c.happened)}</td>"
                   f"<td class='verdict'>{mark}</td><td>{e(_evidence(c))}{chart}{logs}</td>"
                   "</tr>")
    out.append("</table>")
    for s in card.scenarios:
        out.append(f"<h2 id='scenario-{e(s.name)}'>{e(s.name)}</h2><p>{e(s.summary)}</p>")
        if s.log_tail:
            out.append(f"<pre class='log-tail'>{e(s.log_tail)}</pre>")
        for name, png in s.charts.items():
            data = base64.b64encode(png).decode()
            out.append(f"<figure><img class='chart' id='chart-{e(s.name)}-{e(name)}' "
                       f"alt='{e(s.name)}: {e(name)}' src='data:image/png;base64,{data}'>"
                       f"<figcaption>{e(name)}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
