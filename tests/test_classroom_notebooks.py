"""`python -m harness course grade`: students' notebooks executed, each on a broker of its
own, every check scored from what its cell printed: the worked answers at full marks, a
catalogued mistake below them with the mistake named."""

from __future__ import annotations

import csv
import json
import runpy
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import require_rabbitmq

from harness.course import FILL_IN, RIGHT
from harness.grading import formats
from harness.grading.notebooks import check_cells, score_notebook, verdict_of

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "00_setup_and_tour"


def student_notebook(path: Path, wrong: tuple[str, ...] = ()) -> None:
    """Notebook 00 as a student hands it in: the worked answers, and the first catalogued
    mistake for the exercises in `wrong`."""
    found = runpy.run_path(str(ROOT / "solutions" / "notebooks" / f"{NOTEBOOK}.py"))
    nb = nbformat.read(ROOT / "notebooks" / f"{NOTEBOOK}.ipynb", as_version=4)
    for cell in nb.cells:
        for tag in cell.metadata.get("tags", []):
            kind, _, name = tag.partition(":")
            if kind == "answer":
                cell.source = (found["WRONG"][name][0]["code"] if name in wrong
                               else found["ANSWERS"][name])
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def cell(outputs, count=1):
    return {"cell_type": "code", "execution_count": count, "outputs": outputs}


def test_a_check_cells_verdict_is_read_from_what_it_printed():
    def printed(text):
        return {"output_type": "stream", "name": "stdout", "text": text}
    assert verdict_of(cell([printed(f"{RIGHT}: 5 * 3 = 15\n")]))[0] == "right"
    assert verdict_of(cell([printed(f"{FILL_IN}: the answer is None\n")]))[0] == "not answered"
    wrong = {"output_type": "error", "ename": "WrongAnswer", "evalue": "✘ not yet: 12 != 15",
             "traceback": []}
    assert verdict_of(cell([wrong])) == ("not yet", "✘ not yet: 12 != 15")
    broke = {"output_type": "error", "ename": "NameError", "evalue": "name 'lab' is not defined",
             "traceback": []}
    verdict, why = verdict_of(cell([broke]))
    assert verdict == "not yet" and "NameError" in why
    assert verdict_of(cell([], count=None))[0] == "not run"
    scored = score_notebook("x", "nb", [{"name": "a", "verdict": "right", "message": "ok"},
                                        {"name": "b", "verdict": "not answered", "message": "?"}])
    assert (scored.score, scored.max_score) == (1, 2)


def test_the_course_notebooks_tag_their_checks():
    nb = nbformat.read(ROOT / "notebooks" / f"{NOTEBOOK}.ipynb", as_version=4)
    names = [name for _, name in check_cells(nb)]
    assert "stock" in names and len(names) == len(set(names))


@pytest.mark.slow
@pytest.mark.broker
def test_worked_answers_score_full_marks_and_a_mistake_is_named(tmp_path):
    require_rabbitmq()
    student_notebook(tmp_path / "class" / "ada" / "lab00.ipynb")
    student_notebook(tmp_path / "class" / "bert" / "lab00.ipynb", wrong=("stock",))
    out = tmp_path / "graded"
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "course", "grade", str(tmp_path / "class"),
         "--jobs", "2", "--timeout", "900", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # The files are called lab00.ipynb: the columns still name the course's notebook.
    checks = len(check_cells(nbformat.read(tmp_path / "class/ada/lab00.ipynb", as_version=4)))
    with (out / "gradebook.csv").open() as f:
        rows = {r["student"]: r for r in csv.DictReader(f)}
    assert rows["ada"]["score"] == rows["ada"]["max"] == str(checks), rows["ada"]
    assert rows["bert"]["score"] == str(checks - 1) and rows["bert"]["max"] == str(checks)
    assert rows["bert"][f"{NOTEBOOK}/stock"] == "FAIL"
    assert [v for k, v in rows["bert"].items() if k.startswith(f"{NOTEBOOK}/")].count("PASS") == \
        checks - 1

    results = json.loads((out / "students" / "bert" / "results.json").read_text())
    formats.validate_gradescope(results)
    stock = next(t for t in results["tests"] if t["name"] == f"{NOTEBOOK}: stock")
    # Forgets that every order takes q, not 1: the check names what its answer got wrong.
    assert stock["score"] == 0 and "not yet" in stock["output"]
    assert "salads_left(" in stock["output"]
    page = (out / "class.html").read_text()
    assert f"{NOTEBOOK}: stock" in page and "bert" in page
