"""A scored card in the formats courses already grade with: Gradescope's results.json, JUnit
XML for any CI, and Markdown for a GitHub Actions job summary.

    python -m harness grade --impl impl.toml --format gradescope   # writes results.json

Each format is made from the same `Scored` value (see scores.py), so the points and the words
agree everywhere. The Gradescope file validates against `gradescope.schema.json`, written from
Gradescope's Autograder Specifications page.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from harness.grading.scores import Rubric, Scored, ScoredCheck

FORMATS = ("card", "gradescope", "junit", "summary")
FILES = {"gradescope": "results.json", "junit": "junit.xml", "summary": "summary.md"}
SCHEMA = Path(__file__).with_name("gradescope.schema.json")


def pts(x: float) -> str:
    """Points as a person reads them: 1.43, 10, 2.5."""
    return f"{round(x, 2):g}"


def check_text(c: ScoredCheck) -> str:
    """What was tried, what was expected, what happened: the words a student reads."""
    return f"Tried: {c.tried}\nExpected: {c.expected}\nHappened: {c.happened}"


def headline(scored: Scored) -> str:
    """One line: the score, and the checks that passed, failed or could not run."""
    marks = [c.verdict for c in scored.checks]
    stopped = sum(len(n.scenarios) for n in scored.not_run)
    parts = [f"{marks.count('PASS')} checks passed", f"{len(marks) - marks.count('PASS')} "
             "did not"]
    if stopped:
        parts.append(f"{stopped} scenarios could not run")
    return f"Score {scored.score:g} / {scored.max_score:g}: " + ", ".join(parts) + "."


def not_run_text(scored: Scored) -> list[str]:
    """One paragraph per reason that stopped scenarios, each said once."""
    return [f"Could not run ({n.max_score:g} points, scored 0): {n.reason}. Scenarios: "
            f"{', '.join(n.scenarios)}." for n in scored.not_run]


def gradescope(scored: Scored, rubric: Rubric | None = None, *,
               execution_time: float | None = None) -> dict[str, Any]:
    """The scored card as Gradescope's results.json data: one test per check, and one per
    reason that stopped scenarios (zero of their points, said once)."""
    rubric = rubric or Rubric()
    tests: list[dict[str, Any]] = []
    for c in scored.checks:
        if c.verdict == "SKIP":
            continue  # worth nothing either way; the overall output says it was skipped
        tests.append({"name": f"{c.scenario}: {c.name}", "score": round(c.score, 4),
                      "max_score": round(c.max_score, 4),
                      "status": "passed" if c.verdict == "PASS" else "failed",
                      "output": check_text(c), "visibility": rubric.visible(c.scenario),
                      "tags": [c.scenario]})
    for n in scored.not_run:
        tail = f"\n\nLog tail:\n{n.log_tail[-3000:]}" if n.log_tail else ""
        tests.append({"name": f"could not run: {', '.join(n.scenarios)}", "score": 0.0,
                      "max_score": n.max_score, "status": "failed",
                      "output": f"{n.reason}{tail}",
                      "visibility": rubric.visible(n.scenarios[0]), "tags": list(n.scenarios)})
    lines = [headline(scored), *not_run_text(scored)]
    lines += [f"Skipped {s}: {why}" for s, why in scored.skipped]
    out: dict[str, Any] = {"score": scored.score, "output": "\n\n".join(lines),
                           "visibility": "visible", "stdout_visibility": "hidden",
                           "tests": tests}
    if execution_time is not None:
        out["execution_time"] = round(execution_time, 1)
    return out


def junit(scored: Scored) -> str:
    """The scored card as JUnit XML: a failure per failed check, an error per reason that
    stopped scenarios, a skip per skipped one; the score in the suite's properties."""
    failed = sum(c.verdict not in ("PASS", "SKIP") for c in scored.checks)
    suite = ET.Element("testsuite", name=scored.impl, tests=str(
        len(scored.checks) + len(scored.not_run)), failures=str(failed),
        errors=str(len(scored.not_run)),
        skipped=str(sum(c.verdict == "SKIP" for c in scored.checks)))
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="score", value=f"{scored.score:g}")
    ET.SubElement(props, "property", name="max_score", value=f"{scored.max_score:g}")
    for c in scored.checks:
        case = ET.SubElement(suite, "testcase", classname=c.scenario, name=c.name)
        if c.verdict == "SKIP":
            ET.SubElement(case, "skipped", message=c.happened[:500])
        elif c.verdict != "PASS":
            ET.SubElement(case, "failure", message=c.happened[:500],
                          type=c.verdict).text = check_text(c)
    for n in scored.not_run:
        case = ET.SubElement(suite, "testcase", classname=",".join(n.scenarios),
                             name="(could not run)")
        ET.SubElement(case, "error", message=n.reason[:500]).text = n.log_tail[-3000:]
    root = ET.Element("testsuites", name="rabbit-lab grade")
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, "unicode") + "\n"


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", "<br>")


def summary(scored: Scored, card_link: str | None = None) -> str:
    """The scored card as Markdown (a GitHub Actions job summary): the score, what could not
    run (once per reason), what to fix, and every check with its points."""
    mark = {"PASS": "✅", "FAIL": "❌", "NOT RUN": "⚠️", "SKIP": "➖"}
    lines = [f"# rabbit-lab grade: {scored.impl}", "",
             f"**{'PASSED' if scored.passed else 'NOT YET'}**. {headline(scored)}", ""]
    lines += [f"> {t}" for t in not_run_text(scored)]
    failing = [c for c in scored.checks if c.verdict not in ("PASS", "SKIP")]
    if failing:
        lines += ["", "## What to fix", ""]
        lines += [f"- **{_md(c.scenario)}: {_md(c.name)}** ({pts(c.max_score)} points): "
                  f"{_md(c.happened)}" for c in failing]
    lines += ["", "| | scenario | check | points | happened |", "|---|---|---|---|---|"]
    for c in scored.checks:
        lines.append(f"| {mark.get(c.verdict, c.verdict)} | {_md(c.scenario)} | {_md(c.name)} "
                     f"| {pts(c.score)} / {pts(c.max_score)} | {_md(c.happened)} |")
    if card_link:
        lines += ["", f"The full card: {card_link}"]
    return "\n".join(lines) + "\n"


def write(fmt: str, scored: Scored, folder: str | Path, *, rubric: Rubric | None = None,
          execution_time: float | None = None, card_link: str | None = None) -> Path:
    """Write one format into `folder`; return the file written."""
    if fmt not in FILES:
        raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FILES)}")
    path = Path(folder) / FILES[fmt]
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "gradescope":
        text = json.dumps(gradescope(scored, rubric, execution_time=execution_time),
                          indent=2, ensure_ascii=False) + "\n"
    elif fmt == "junit":
        text = junit(scored)
    else:
        text = summary(scored, card_link)
    path.write_text(text, encoding="utf-8")
    return path


def add_score_to_card(run_dir: str | Path, scored: Scored) -> None:
    """Put the score line under the card's title in report.md and report.html (until the
    card renders points itself)."""
    import html
    md, page = Path(run_dir) / "report.md", Path(run_dir) / "report.html"
    line = headline(scored)
    if md.exists():
        title, sep, rest = md.read_text().partition("\n")
        md.write_text(f"{title}{sep}\n**{line}**\n{rest}")
    if page.exists() and "</h1>" in (text := page.read_text(encoding="utf-8")):
        page.write_text(text.replace("</h1>", f"</h1>\n<p id='score' data-score='"
                                     f"{scored.score:g}' data-max='{scored.max_score:g}'>"
                                     f"<strong>{html.escape(line)}</strong></p>", 1),
                        encoding="utf-8")


def validate_gradescope(data: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError if `data` is not a Gradescope results.json."""
    import jsonschema
    jsonschema.validate(data, json.loads(SCHEMA.read_text()))
