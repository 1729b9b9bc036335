"""Grade a whole class at once, in parallel, and show the instructor what the class got wrong.

    python -m harness grade-class submissions/ --jobs 2        # one folder per student
    python -m harness grade-class roster.csv --jobs 4           # rows: name,path

Each student is graded by `python -m harness grade` in a slot of its own (slots.py: its own
broker node, a time limit, its processes killed when it ends), so one submission that hangs or
forks a runaway process costs only its own slot. Results land in OUT/students/NAME/
(`outcome.json`, the card's run folder, `results.json` for Gradescope); a student with an
outcome is skipped next time unless `again`. Then OUT/gradebook.csv and OUT/class.html are
written from every outcome, scored with the rubric (re-scoring needs no re-grading), with
class.json holding every outcome and scored card.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import re
import shutil
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.grading import formats
from harness.grading.scores import Rubric, Scored, normalise, score_card
from harness.grading.slots import run_slot


@dataclass(frozen=True)
class Submission:
    """A student's name (safe as a folder name) and the path graded (impl.toml or notebook)."""

    student: str
    path: Path


def safe_name(name: str) -> str:
    """A student name as a folder name: letters, digits, '-', '_' and '.' only."""
    cleaned = re.sub(r"[^\w.-]+", "_", name.strip()).strip("._")
    return cleaned[:80] or "student"


def find_submissions(source: str | Path, *, pattern: str = "impl.toml") -> list[Submission]:
    """The class: a folder holding one folder per student (each with `pattern`), or a CSV of
    name,path rows (a header row 'name,path' is allowed; paths relative to the CSV)."""
    source = Path(source)
    found: list[Submission] = []
    if source.is_file() and source.suffix.lower() == ".csv":
        with source.open(newline="") as f:
            for row in csv.reader(f):
                if not row or row[0].strip().lower() in ("", "name", "student"):
                    continue
                if len(row) < 2:
                    raise ValueError(f"{source}: row {row!r} is not name,path")
                path = (source.parent / row[1].strip()).resolve()
                found.append(Submission(safe_name(row[0]), path))
    elif source.is_dir():
        for folder in sorted(p for p in source.iterdir() if p.is_dir()):
            hits = sorted(folder.glob(pattern))
            if hits:
                found.append(Submission(safe_name(folder.name), hits[0].resolve()))
    else:
        raise ValueError(f"{source} is neither a folder of submissions nor a .csv roster")
    names = [s.student for s in found]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"{source}: two submissions named {twice[0]!r}")
    if not found:
        raise ValueError(f"{source}: no submission found (each needs {pattern})")
    return found


@dataclass
class ClassRun:
    """How to grade each student: the command that grades one, and how to score its output."""

    command: Callable[[Submission, Path], list[str]]  # (submission, student folder) -> argv
    score: Callable[[Submission, Path, str | None], Scored]  # (…, reason if stopped)
    card_page: Callable[[Path], Path | None]  # student folder -> the card to link
    # student folder -> True when the grade failed for the machine's sake (no broker could
    # be started), not the student's: such a grade is tried again
    machine_failed: Callable[[Path], bool] = lambda folder: False


def grade_class(submissions: list[Submission], run: ClassRun, out: str | Path, *,
                jobs: int = 2, timeout: float = 900.0, again: bool = False,
                rubric: Rubric | None = None, progress: bool = True,
                max_file_mb: int = 2048) -> list[dict[str, Any]]:
    """Grade every submission (`jobs` at a time), then write gradebook.csv and class.html.

    Returns one outcome per student (the data of its outcome.json, with its scored card).
    """
    from tqdm.auto import tqdm
    out = Path(out).resolve()
    todo = [s for s in submissions if again or not (out / "students" / s.student /
                                                     "outcome.json").exists()]
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool, \
            tqdm(total=len(todo), desc="grading", unit="student", disable=not progress,
                 file=sys.stderr) as bar:
        futures = {pool.submit(_grade_one, s, run, out, timeout, max_file_mb): s for s in todo}
        for future in as_completed(futures):
            bar.set_postfix_str(futures[future].student)
            future.result()
            bar.update()
    outcomes = []
    for s in submissions:
        folder = out / "students" / s.student
        outcome = json.loads((folder / "outcome.json").read_text())
        scored = run.score(s, folder, outcome.get("stopped"))
        formats.write("gradescope", scored, folder, rubric=rubric,
                      execution_time=outcome["seconds"])
        page = run.card_page(folder)
        outcome["card"] = str(page.relative_to(out)) if page else None
        outcome["scored"] = scored.to_dict()
        outcomes.append(outcome)
    write_gradebook(outcomes, out / "gradebook.csv")
    (out / "class.json").write_text(json.dumps(outcomes, indent=2, ensure_ascii=False) + "\n")
    (out / "class.html").write_text(class_page(outcomes), encoding="utf-8")
    return outcomes


ATTEMPTS = 3  # a grade whose broker could not start (a port taken meanwhile) is tried again


def _grade_one(s: Submission, run: ClassRun, out: Path, timeout: float,
               max_file_mb: int) -> None:
    folder = out / "students" / s.student
    try:
        attempt = 0
        while True:
            attempt += 1
            shutil.rmtree(folder, ignore_errors=True)  # a regrade takes no earlier card
            folder.mkdir(parents=True)
            result = run_slot(run.command(s, folder), log=folder / "grade.log",
                              timeout=timeout, max_file_mb=max_file_mb)
            if result.timed_out or attempt == ATTEMPTS or not run.machine_failed(folder):
                break
    except Exception as exc:  # the grader's own failure: this student is not graded, others are
        folder.mkdir(parents=True, exist_ok=True)
        outcome = {"student": s.student, "path": str(s.path), "returncode": None,
                   "stopped": f"the grader could not run ({exc.__class__.__name__}: {exc})",
                   "timed_out": False, "seconds": 0.0, "peak_rss_mb": 0.0, "started": 0.0,
                   "ended": 0.0, "processes_killed_after": 0}
        (folder / "outcome.json").write_text(json.dumps(outcome, indent=2) + "\n")
        return
    stopped = None
    if result.timed_out:
        stopped = (f"the grade did not finish within its time limit of {timeout:.0f} s; it was "
                   f"stopped, with every process it had started")
    elif result.returncode not in (0, 1):  # 1 is a card with a failing check
        stopped = f"the grade crashed (exit code {result.returncode}): " + log_tail(folder)
    outcome = {"student": s.student, "path": str(s.path), "stopped": stopped,
               "attempts": attempt, "returncode": result.returncode,
               "timed_out": result.timed_out,
               "seconds": round(result.seconds, 1), "peak_rss_mb": result.peak_rss_mb,
               "started": result.started, "ended": result.ended,
               "processes_killed_after": result.leftovers_killed}
    (folder / "outcome.json").write_text(json.dumps(outcome, indent=2) + "\n")


# ---- black-box implementations: `python -m harness grade` per student -----------------------


def impl_run(*, broker: str = "local", small: bool = False, only: list[str] | None = None,
             orders: int | None = None, rubric: Rubric | None = None,
             rubric_path: str | None = None) -> ClassRun:
    """Grade impl.toml submissions with `python -m harness grade`, each on a broker of its
    own (`broker` local by default: a fresh node per grade); `rubric_path` goes to each grade
    so that the score on its card agrees with the gradebook's."""
    from harness.scenarios import registry
    expected = only or [s.name for s in registry.black_box()]

    def command(s: Submission, folder: Path) -> list[str]:
        argv = [sys.executable, "-m", "harness", "grade", "--impl", str(s.path), "--out",
                str(folder / "runs"), "--broker", broker,
                # The class already runs `jobs` grades at a time: one node each is enough.
                "--one-node"]
        argv += ["--small"] if small else []
        argv += ["--only", ",".join(only)] if only else []
        argv += ["--orders", str(orders)] if orders is not None else []
        argv += ["--rubric", str(Path(rubric_path).resolve())] if rubric_path else []
        return argv

    def score(s: Submission, folder: Path, stopped: str | None) -> Scored:
        report = latest_report(folder)
        if report is None and not stopped:  # it exited (code 1 too) before writing a card
            stopped = "the grader stopped before writing a card: " + log_tail(folder)
        card = json.loads(report.read_text()) if report and not stopped else \
            {"impl": s.student, "scenarios": []}
        card["impl"] = s.student
        return score_card(card, rubric, expected, stopped=stopped)

    def page(folder: Path) -> Path | None:
        report = latest_report(folder)
        return report.with_name("report.html") if report else None

    def machine_failed(folder: Path) -> bool:
        if latest_report(folder) is not None:
            return False
        log = (folder / "grade.log").read_text(errors="replace")
        return "BrokerError" in log or "BrokerNotFound" in log

    return ClassRun(command, score, page, machine_failed)


def log_tail(folder: Path, lines: int = 3) -> str:
    """The last lines of a student's grade.log that are not a traceback's frames."""
    text = (folder / "grade.log").read_text(errors="replace").splitlines()
    kept = [t.strip() for t in text if t.strip() and not t.startswith(("  ", "Traceback"))]
    return " / ".join(kept[-lines:])[-500:]


def latest_report(folder: Path) -> Path | None:
    """The newest report.json under a student's folder."""
    found = sorted((folder / "runs").glob("grade-*/report.json"))
    return found[-1] if found else None


# ---- the gradebook and the class page ----------------------------------------------------


def _columns(outcomes: list[dict[str, Any]]) -> list[str]:
    """Every 'scenario/check' seen, scenario by scenario, each scenario's checks in order."""
    cols: dict[str, None] = {}
    for o in outcomes:
        cols.update(dict.fromkeys(Scored.from_dict(o["scored"]).verdicts()))
    scenarios = list(dict.fromkeys(c.split("/", 1)[0] for c in cols))
    return sorted(cols, key=lambda c: (scenarios.index(c.split("/", 1)[0]),
                                       c.endswith("/(scenario)")))


def write_gradebook(outcomes: list[dict[str, Any]], path: Path) -> None:
    """gradebook.csv: student, score, max, status, then each check's verdict."""
    cols = _columns(outcomes)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["student", "score", "max", "status", *cols])
        for o in outcomes:
            scored = Scored.from_dict(o["scored"])
            v = scored.verdicts()
            status = "timed out" if o["timed_out"] else "crashed" if o["stopped"] else \
                "passed" if scored.passed else "not yet"
            w.writerow([o["student"], f"{scored.score:g}", f"{scored.max_score:g}", status,
                        *[v.get(c, "") for c in cols]])


def mistakes(outcomes: list[dict[str, Any]]) -> list[tuple[str, str, list[str]]]:
    """The class's mistakes, most common first: (check, cause, students who made it)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for o in outcomes:
        scored = Scored.from_dict(o["scored"])
        for c in scored.checks:
            if c.verdict not in ("PASS", "SKIP"):
                groups.setdefault((f"{c.scenario}: {c.name}", c.cause or c.happened),
                                  []).append(o["student"])
        for n in scored.not_run:
            groups.setdefault(("could not run", normalise(n.reason)), []).append(o["student"])
    rows = [(check, cause, sorted(set(who))) for (check, cause), who in groups.items()]
    return sorted(rows, key=lambda r: (-len(r[2]), r[0]))


def failing_checks(outcomes: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """Each check with how many students did not pass it, most failed first."""
    counts: dict[str, int] = {}
    for o in outcomes:
        for key, verdict in Scored.from_dict(o["scored"]).verdicts().items():
            label = key.replace("/(scenario)", ": could not run").replace("/", ": ", 1)
            counts.setdefault(label, 0)
            counts[label] += verdict not in ("PASS", "SKIP")
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def _chart(rows: list[tuple[str, int]], students: int) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    shown = [r for r in rows if r[1]][:25][::-1]
    if not shown:
        return ""
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(shown) + 1.2))
    ax.barh([k for k, _ in shown], [n for _, n in shown], color="#c44")
    ax.set_xlim(0, students)
    ax.set_xlabel(f"students who did not pass it (of {students})")
    ax.set_title("Which checks fail most")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;
text-align:left;vertical-align:top}img{max-width:100%}"""


def class_page(outcomes: list[dict[str, Any]]) -> str:
    """class.html: which checks fail most (a chart), the most common mistakes grouped by
    cause with the students who made each, and every student's score with a link to the card."""
    e = html.escape
    n = len(outcomes)
    scores = [Scored.from_dict(o["scored"]) for o in outcomes]
    mean = sum(s.score for s in scores) / n if n else 0
    top = max((s.max_score for s in scores), default=0)
    fails = failing_checks(outcomes)
    out = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
           f"<title>Class results</title><style>{_CSS}</style></head><body>",
           f"<h1>Class results: {n} students</h1>",
           f"<p id='mean'>Mean score {mean:.1f} / {top:g}; "
           f"{sum(s.passed for s in scores)} passed every check.</p>"]
    png = _chart(fails, n)
    if png:
        out.append(f"<img id='fail-chart' alt='which checks fail most' "
                   f"src='data:image/png;base64,{png}'>")
    out.append("<h2>Which checks fail most</h2><table id='failing'><tr><th>check</th>"
               "<th>students who did not pass it</th></tr>")
    out += [f"<tr><td>{e(k)}</td><td>{c}</td></tr>" for k, c in fails if c]
    out.append("</table><h2>The mistakes the class makes most</h2><table id='mistakes'>"
               "<tr><th>students</th><th>check</th><th>cause</th><th>who</th></tr>")
    for check, cause, who in mistakes(outcomes):
        out.append(f"<tr class='mistake'><td>{len(who)}</td><td>{e(check)}</td>"
                   f"<td>{e(cause)}</td><td>{e(', '.join(who))}</td></tr>")
    out.append("</table><h2>Every student</h2><table id='students'><tr><th>student</th>"
               "<th>score</th><th>max</th><th>status</th><th>seconds</th>"
               "<th>peak memory (MB)</th><th>card</th></tr>")
    for o, s in zip(outcomes, scores, strict=True):
        status = "timed out" if o["timed_out"] else "crashed" if o["stopped"] else \
            "passed" if s.passed else "not yet"
        link = (f"<a href='{e(o['card'])}'>card</a>" if o.get("card") else "no card")
        link += f" · <a href='students/{e(o['student'])}/results.json'>results.json</a>"
        out.append(f"<tr class='student' data-student='{e(o['student'])}'>"
                   f"<td>{e(o['student'])}</td><td>{s.score:g}</td><td>{s.max_score:g}</td>"
                   f"<td>{e(status)}</td><td>{o['seconds']}</td><td>{o['peak_rss_mb']}</td>"
                   f"<td>{link}</td></tr>")
    out.append("</table></body></html>")
    return "\n".join(out) + "\n"
