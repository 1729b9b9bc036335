"""Grade students' course notebooks: execute each on a broker of its own and score its checks.

    python -m harness course grade alice.ipynb bob.ipynb --jobs 2

Each exercise's check cell is tagged `check:NAME` and prints its verdict (harness.course):
"✔ right", "✋ fill this in first" (not answered), or raises WrongAnswer "✘ not yet: ...". The
verdicts are read from the executed cells' outputs, which every notebook has, whatever else the
course code records. A notebook runs top to bottom with errors allowed (a wrong answer must not
stop the checks after it), each cell within its time limit, with LAB_BROKER naming a broker
kind the notebook opens for itself (default `local`: a node of its own).

We follow nbgrader's and Otter-Grader's convention of one test per question with points and
hidden/visible outputs in Gradescope's results.json, and keep the lab's own check cells
rather than their test files: the checks already run against the student's live broker.

One notebook is graded in a child process (`python -m harness.grading.notebooks`), in a slot
of classroom.py's, so a notebook that hangs or starts a runaway process costs only its slot.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from harness.grading.classroom import ClassRun, Submission, find_submissions, safe_name
from harness.grading.scores import NotRun, Rubric, Scored, ScoredCheck

ROOT = Path(__file__).resolve().parents[2]
RIGHT_MARK = "✔"  # harness.course.RIGHT starts with it
FILL_IN_MARK = "✋"
WRONG_MARK = "✘"
VERDICT = {"right": "PASS", "not yet": "FAIL", "not answered": "NOT ANSWERED",
           "not run": "NOT RUN"}


def check_cells(nb: Any) -> list[tuple[int, str]]:
    """(cell index, exercise name) of every cell tagged check:NAME, in order."""
    out = []
    for i, cell in enumerate(nb.cells):
        for tag in cell.get("metadata", {}).get("tags", []):
            kind, _, name = tag.partition(":")
            if kind == "check" and name:
                out.append((i, name))
    return out


def assignment_of(nb: Any, fallback: str) -> str:
    """The course notebook a student's copy is of (the one with the same checks), so that
    every student's columns agree whatever the file is called; else `fallback`."""
    import nbformat
    names = {n for _, n in check_cells(nb)}
    for course in sorted((ROOT / "notebooks").glob("*.ipynb")):
        if names and names == {n for _, n in check_cells(nbformat.read(course, as_version=4))}:
            return course.stem
    return fallback


def verdict_of(cell: Any) -> tuple[str, str]:
    """A check cell's verdict from what it printed or raised: (verdict, the message)."""
    text = "".join(o.get("text", "") for o in cell.get("outputs", [])
                   if o.get("output_type") == "stream")
    errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    if errors:
        err = errors[0]
        if err.get("ename") == "WrongAnswer":
            return "not yet", str(err.get("evalue", ""))
        return "not yet", (f"the check could not judge the answer: {err.get('ename')}: "
                           f"{err.get('evalue', '')}")
    for line in text.splitlines():
        if line.startswith(RIGHT_MARK):
            return "right", line
        if line.startswith(FILL_IN_MARK):
            return "not answered", line
        if line.startswith(WRONG_MARK):
            return "not yet", line
    if cell.get("execution_count") is None:
        return "not run", "the notebook stopped before this check ran"
    return "not yet", "the check printed no verdict"


def execute(path: Path, out: Path, *, cell_timeout: float = 300.0,
            broker: str = "local") -> list[dict[str, str]]:
    """Run a notebook top to bottom (errors allowed), save it executed, return its checks."""
    import nbformat
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.update(LAB_BROKER=broker, LAB_RUNS=str(out / "runs"), PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    # IPC sockets, not TCP ports, for the kernel: a port picked on a busy machine can be taken
    # before the kernel binds it. A short folder: a socket path is limited to about 100 bytes.
    sockets = tempfile.mkdtemp(prefix="nbk")
    try:
        km = KernelManager(kernel_name="python3", transport="ipc",
                           ip=os.path.join(sockets, "k"))
        client = NotebookClient(nb, km=km, timeout=cell_timeout, kernel_name="python3",
                                allow_errors=True, interrupt_on_timeout=True,
                                resources={"metadata": {"path": str(out)}})
        try:
            client.execute()
        except Exception as exc:  # a dead kernel: the checks not reached say "not run"
            print(f"the notebook stopped: {exc.__class__.__name__}: {exc}", file=sys.stderr)
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
    nbformat.write(nb, out / "executed.ipynb")
    checks = []
    for i, name in check_cells(nb):
        verdict, message = verdict_of(nb.cells[i])
        checks.append({"name": name, "verdict": verdict, "message": message})
    (out / "checks.json").write_text(json.dumps(
        {"notebook": assignment_of(nb, path.stem), "checks": checks}, indent=2,
        ensure_ascii=False) + "\n")
    return checks


def score_notebook(student: str, notebook: str, checks: list[dict[str, str]],
                   rubric: Rubric | None = None) -> Scored:
    """Points per check (the rubric's weight 'NOTEBOOK/NAME', e.g. '03_idempotency/dedup',
    default 1) for its verdict."""
    rubric = rubric or Rubric()
    scored = []
    for c in checks:
        points = rubric.weight(notebook, c["name"])
        verdict = VERDICT.get(c["verdict"], "FAIL")
        scored.append(ScoredCheck(
            notebook, c["name"], verdict, points if verdict == "PASS" else 0.0, points,
            f"exercise {c['name']}", "the check says ✔ right", c["message"],
            c["message"] if verdict == "FAIL" else ""))
    return Scored(student, scored, [], [])


def find_notebooks(paths: list[str]) -> list[Submission]:
    """Notebooks named one by one, or a folder of student folders, or a CSV of name,path."""
    found: list[Submission] = []
    for p in map(Path, paths):
        if p.suffix == ".ipynb":
            found.append(Submission(safe_name(p.stem), p.resolve()))
        else:
            found += find_submissions(p, pattern="*.ipynb")
    names = [s.student for s in found]
    if len(set(names)) != len(names):
        raise ValueError("two notebooks have the same name: give them a folder each, or a CSV")
    return found


def notebook_run(*, broker: str = "local", rubric: Rubric | None = None,
                 cell_timeout: float = 300.0) -> ClassRun:
    """Grade notebooks, each in a child process of its own (see the module's docstring)."""
    import nbformat

    def command(s: Submission, folder: Path) -> list[str]:
        return [sys.executable, "-m", "harness.grading.notebooks", str(s.path), "--out",
                str(folder), "--cell-timeout", str(cell_timeout), "--broker", broker]

    def score(s: Submission, folder: Path, stopped: str | None) -> Scored:
        done = folder / "checks.json"
        if done.exists() and not stopped:
            data = json.loads(done.read_text())
            return score_notebook(s.student, data["notebook"], data["checks"], rubric)
        nb = nbformat.read(s.path, as_version=4)
        name = assignment_of(nb, s.path.stem)
        points = sum((rubric or Rubric()).weight(name, n) for _, n in check_cells(nb))
        why = stopped or "the notebook's grade wrote no result"
        return Scored(s.student, [], [NotRun(why, (name,), points)], [])

    def page(folder: Path) -> Path | None:
        found = folder / "executed.ipynb"
        return found if found.exists() else None

    return ClassRun(command, score, page)


def main(argv: list[str] | None = None) -> int:
    """Grade one notebook: python -m harness.grading.notebooks NB.ipynb --out DIR."""
    p = argparse.ArgumentParser(prog="python -m harness.grading.notebooks")
    p.add_argument("notebook")
    p.add_argument("--out", required=True)
    p.add_argument("--cell-timeout", type=float, default=300.0)
    p.add_argument("--broker", default="local")
    args = p.parse_args(argv)
    checks = execute(Path(args.notebook), Path(args.out), cell_timeout=args.cell_timeout,
                     broker=args.broker)
    for c in checks:
        print(f"{c['name']:<20} {c['verdict']:<13} {c['message'][:100]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
