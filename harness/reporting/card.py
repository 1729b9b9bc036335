"""The grade card rendered: report.json, report.md and a self-contained report.html."""

from __future__ import annotations

import base64
import html
import json
from typing import TYPE_CHECKING, Any

from harness.invariants import Check

if TYPE_CHECKING:
    from harness.grading.grade import ReportCard


def skipped(c: Check) -> bool:
    """A check skipped on purpose (the broker or the implementation cannot offer it)."""
    return c.passed is None and c.evidence.get("skipped") is True


def not_judged(c: Check) -> bool:
    """A check a contract gap left unjudged (its data could not be read)."""
    return c.passed is None and c.evidence.get("not_judged") is True


def mark(c: Check) -> str:
    """The verdict word of a check: PASS, FAIL, SKIP, UNJUDGED (a contract gap) or ERROR."""
    if c.passed:
        return "PASS"
    if c.passed is False:
        return "FAIL"
    return "SKIP" if skipped(c) else "UNJUDGED" if not_judged(c) else "ERROR"


def _to_fix(card: ReportCard) -> list[Check]:
    # A check a gap left unjudged is listed under its gap, not again here.
    return [c for c in card.checks if c.passed is not True and not skipped(c)
            and not not_judged(c)]


def _totals(card: ReportCard) -> str:
    n = card.counts()
    return (f"{n['passed']} passed, {n['failed']} failed, {n['not_run']} could not run, "
            f"{n['skipped']} skipped, {n['not_judged']} not judged, "
            f"{n['contract_gaps']} contract gaps")


def _gap_line(g: dict[str, Any]) -> tuple[str, str]:
    blocked = g["checks_not_judged"]
    return (f"{g['what']} {g['detail']}",
            f"met in {', '.join(g['scenarios'])}; " + (
                f"{len(blocked)} checks not judged: {', '.join(blocked[:6])}"
                + (" ..." if len(blocked) > 6 else "") if blocked
                else "every check that did not need it was judged"))


def write_card(card: ReportCard) -> None:
    """Write report.json, report.md and report.html into the card's run folder."""
    card.run_dir.mkdir(parents=True, exist_ok=True)
    (card.run_dir / "report.json").write_text(json.dumps(card.to_dict(), indent=2) + "\n")
    (card.run_dir / "report.md").write_text(markdown(card))
    (card.run_dir / "report.html").write_text(html_page(card), encoding="utf-8")


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", "<br>")


def _evidence(c: Check) -> str:
    ev = {k: v for k, v in c.evidence.items()
          if k not in ("log_tail", "skipped", "not_judged") and v}
    return ", ".join(f"{k}: {v}" for k, v in ev.items())


def markdown(card: ReportCard) -> str:
    """The card as Markdown (charts linked from the scenarios' run folders)."""
    lines = [f"# Report card: {card.impl}", "",
             f"Spec `{card.spec or 'built in (the lab)'}`, broker {card.broker}, "
             f"{card.started}.", "",
             f"**{'PASSED' if card.passed else 'FAILED'}**: {_totals(card)}.", "",
             "| scenario | passed | failed | could not run |", "|---|---|---|---|"]
    for s in card.scenarios:
        marks = [mark(c) for c in s.checks]
        lines.append(f"| {s.name} | {marks.count('PASS')} | {marks.count('FAIL')} | "
                     f"{marks.count('ERROR')} |")
    if card.gaps:
        lines += ["", "## Fix this first: contract gaps", ""]
        lines += [f"- **{_md(head)}**: {_md(rest)}" for head, rest in map(_gap_line, card.gaps)]
    failing = _to_fix(card)
    if failing:
        lines += ["", "## What to fix", ""]
        lines += [f"- **{_md(c.scenario)}: {_md(c.name)}**: {_md(c.happened)}" for c in failing]
    lines += ["", "## Every check", "",
              "| scenario | check | tried | expected | happened | verdict | evidence |",
              "|---|---|---|---|---|---|---|"]
    for c in card.checks:
        lines.append(f"| {_md(c.scenario)} | {_md(c.name)} | {_md(c.tried)} | "
                     f"{_md(c.expected)} | {_md(c.happened)} | {mark(c)} | "
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
tr.UNJUDGED td.verdict{background:#eee}
pre{background:#f6f6f6;padding:8px;overflow:auto;max-height:20em}img{max-width:100%}
"""


def html_page(card: ReportCard) -> str:
    """The card as one self-contained HTML page: every chart is an embedded PNG."""
    e = html.escape
    out = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
           f"<title>Report card: {e(card.impl)}</title><style>{_CSS}</style></head><body>",
           f"<h1>Report card: {e(card.impl)}</h1>",
           f"<p>Spec <code>{e(card.spec or 'built in (the lab)')}</code>, broker "
           f"{e(card.broker)}, {e(card.started)}.</p>",
           f"<p id='verdict' data-passed='{str(card.passed).lower()}'><strong>"
           f"{'PASSED' if card.passed else 'FAILED'}</strong>: {e(_totals(card))}.</p>",
           "<table id='summary'><tr><th>scenario</th><th>passed</th><th>failed</th>"
           "<th>could not run</th></tr>"]
    for s in card.scenarios:
        marks = [mark(c) for c in s.checks]
        out.append(f"<tr><td>{e(s.name)}</td><td>{marks.count('PASS')}</td>"
                   f"<td>{marks.count('FAIL')}</td><td>{marks.count('ERROR')}</td></tr>")
    out.append("</table>")
    if card.gaps:
        out.append("<h2>Fix this first: contract gaps</h2><ul id='gaps'>")
        out += [f"<li><strong>{e(head)}</strong>: {e(rest)}</li>"
                for head, rest in map(_gap_line, card.gaps)]
        out.append("</ul>")
    failing = _to_fix(card)
    if failing:  # what to fix, before the full table
        out.append("<h2>What to fix</h2><ul id='failures'>")
        out += [f"<li><strong>{e(c.scenario)}: {e(c.name)}</strong>: {e(c.happened)}</li>"
                for c in failing]
        out.append("</ul>")
    out.append("<h2>Every check</h2><table id='checks'><tr><th>scenario</th><th>check</th>"
               "<th>tried</th><th>expected</th><th>happened</th><th>verdict</th><th>evidence</th></tr>")
    for c in card.checks:
        verdict = mark(c)
        chart = (f" <a href='#chart-{e(c.scenario)}-{e(c.chart)}'>chart</a>"
                 if c.chart else "")
        tail = c.evidence.get("log_tail")
        logs = (f"<details><summary>log tail</summary><pre>{e(str(tail))}</pre></details>"
                if tail else "")
        out.append(f"<tr class='check {verdict}' data-scenario='{e(c.scenario)}'>"
                   f"<td>{e(c.scenario)}</td><td>{e(c.name)}</td><td>{e(c.tried)}</td>"
                   f"<td>{e(c.expected)}</td><td>{e(c.happened)}</td>"
                   f"<td class='verdict'>{verdict}</td><td>{e(_evidence(c))}{chart}{logs}</td>"
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
