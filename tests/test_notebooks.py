"""The course notebooks: committed stripped and well-formed (fast), and run top to bottom (slow).

Every exercise ships empty: an answer cell tagged `answer:NAME` holding `None  # TODO`, and a
check cell tagged `check:NAME` calling `harness.course.check`. The slow test executes every
notebook on a real broker with nbclient, as a student would, and tries each exercise at its
check several ways: as shipped (the check says "fill this in first" and nothing fails), with
each catalogued mistake of `solutions/notebooks/` (the check fails, naming that mistake), with
each other right answer there (`ALSO_RIGHT`: the check passes) and with the worked answer (the
check passes, and the rest of the notebook runs with it). It skips
locally without a rabbitmq-server release script, but fails under CI=true.
"""

from __future__ import annotations

import copy
import os
import re
import runpy
import shutil
import tempfile
import time
from pathlib import Path

import nbformat
import pytest
from conftest import require_rabbitmq

from harness.course import FILL_IN, RIGHT

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
SOLUTION_DIR = ROOT / "solutions" / "notebooks"
COURSE = (
    "00_setup_and_tour.ipynb",
    "01_baseline.ipynb",
    "02_backlog_drain.ipynb",
    "03_idempotency.ipynb",
    "04_dead_letters.ipynb",
    "05_resilience.ipynb",
    "06_queueing_model.ipynb",
    "07_monitoring.ipynb",
    "08_limits_ttl_retries.ipynb",
    "09_dual_write.ipynb",
    "10_competing_consumers.ipynb",
    "11_cluster.ipynb",
)
CELL_TIMEOUT_S = 300


def read(name: str) -> nbformat.NotebookNode:
    """A course notebook, validated against the nbformat v4 schema."""
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    nbformat.validate(nb)
    return nb


def code_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    """The notebook's code cells, in order."""
    return [c for c in nb.cells if c.cell_type == "code"]


# ---- fast: the notebooks as committed ----------------------------------------------------------


def test_exactly_the_course_notebooks():
    assert sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb")) == list(COURSE)


@pytest.mark.parametrize("name", COURSE)
def test_notebook_is_committed_without_outputs(name):
    for i, cell in enumerate(code_cells(read(name))):
        assert cell.outputs == [], f"{name} cell {i} has outputs: strip them"
        assert cell.execution_count is None, f"{name} cell {i} has an execution count"


@pytest.mark.parametrize("name", COURSE)
def test_notebook_kernel_is_python3_and_installed(name):
    from jupyter_client.kernelspec import KernelSpecManager

    meta = read(name).metadata
    assert meta.kernelspec.name == "python3"
    assert meta.language_info.name == "python"
    assert "python3" in KernelSpecManager().find_kernel_specs()


@pytest.mark.parametrize("name", COURSE)
def test_notebook_starts_with_its_learning_goal(name):
    first = read(name).cells[0]
    assert first.cell_type == "markdown"
    assert first.source.startswith("# "), "the first cell opens with the notebook's title"
    assert "**Learning goal:**" in first.source


@pytest.mark.parametrize("name", COURSE)
def test_notebook_follows_the_course_pattern(name):
    """Predict before running, an exercise with a check, its own broker closed at the end."""
    nb = read(name)
    sources = [c.source for c in code_cells(nb)]
    text = "\n".join(sources)
    assert "my_prediction" in text, "a prediction variable for the student to fill in"
    # The cluster chapter maps LAB_BROKER to a local cluster (cluster_kind): it kills nodes.
    assert re.search(r'open_broker\((cluster_kind\()?os\.environ\.get\("LAB_BROKER", "auto"\)',
                     text), "the notebook opens its broker as LAB_BROKER says"
    assert "broker.close()" in sources[-1], "the last code cell closes the broker"
    checks = [s for s in sources if s.startswith("# Check") and "assert" in s]
    assert checks, "an exercise check cell (starting '# Check', with asserts)"
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "Exercise" in markdown and "Predict" in markdown
    if "scenarios." in text:
        assert 'os.environ.get("LAB_RUNS", "runs")' in text, "runs go to LAB_RUNS"


GLOSSARY_TERMS = ("ack-nack-reject", "prefetch", "publisher-confirm", "durable-vs-persistent",
                  "vhost", "exchange-binding-routing-key", "dead-letter-exchange", "x-death",
                  "at-least-once", "idempotent", "outbox", "ghost-order", "quorum-queue")


def test_glossary_defines_the_course_terms_and_every_link_lands():
    glossary = (NOTEBOOK_DIR / "GLOSSARY.md").read_text()
    anchors = set(re.findall(r'<a id="([^"]+)"></a>', glossary))
    assert set(GLOSSARY_TERMS) <= anchors, f"missing: {set(GLOSSARY_TERMS) - anchors}"
    for name in COURSE:
        nb = read(name)
        markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
        assert "](GLOSSARY.md)" in nb.cells[0].source, f"{name}: link the glossary up front"
        for anchor in re.findall(r"\]\(GLOSSARY\.md#([^)]+)\)", markdown):
            assert anchor in anchors, f"{name} links GLOSSARY.md#{anchor}, which is not there"


def test_readme_lists_every_notebook():
    readme = (NOTEBOOK_DIR / "README.md").read_text()
    assert "jupyter lab notebooks/" in readme
    for name in COURSE:
        assert name in readme, f"notebooks/README.md does not mention {name}"


# ---- the exercises: shipped empty, worked answers and wrong answers in solutions/ ---------------


def tags(cell: nbformat.NotebookNode) -> list[str]:
    """A cell's tags."""
    return list(cell.metadata.get("tags", []))


def exercises(nb: nbformat.NotebookNode) -> dict[str, tuple[int, int]]:
    """Each exercise's name -> (index of its answer cell, index of its check cell)."""
    answers, checks = {}, {}
    for i, cell in enumerate(nb.cells):
        for tag in cell.metadata.get("tags", []):
            kind, _, name = tag.partition(":")
            if kind in ("answer", "check"):
                (answers if kind == "answer" else checks)[name] = i
    assert set(answers) == set(checks), f"answers {sorted(answers)} vs checks {sorted(checks)}"
    return {name: (answers[name], checks[name]) for name in answers}


def solutions(name: str) -> tuple[dict[str, str], dict[str, list[dict[str, str]]]]:
    """The worked answers (cell tag name -> source) and the mistake catalogue (cell tag name
    -> mistakes, each {"mistake": what the student got wrong, "says": a phrase the check's
    message must hold, "code": the answer cell's source})."""
    found = runpy.run_path(str(SOLUTION_DIR / (Path(name).stem + ".py")))
    return found["ANSWERS"], found["WRONG"]


def also_right(name: str) -> dict[str, list[dict[str, str]]]:
    """Right answers other than the worked one (cell tag name -> answers, each {"answer":
    what it does, "code": the answer cell's source}), which the check must accept too."""
    return runpy.run_path(str(SOLUTION_DIR / (Path(name).stem + ".py"))).get("ALSO_RIGHT", {})


@pytest.mark.parametrize("name", COURSE)
def test_exercises_ship_empty_with_a_check_after_them(name):
    nb = read(name)
    found = exercises(nb)
    assert found, f"{name} has no exercise (cells tagged answer:NAME and check:NAME)"
    for ex, (answer, check) in found.items():
        source = nb.cells[answer].source
        assert answer < check, f"{ex}: the check comes before the answer"
        assert "None" in source and "TODO" in source, f"{ex}: the answer cell is not empty"
        assert "check(" in nb.cells[check].source, f"{ex}: the check cell does not call check()"


@pytest.mark.parametrize("name", COURSE)
def test_every_exercise_has_a_worked_answer_and_a_catalogue_of_mistakes(name):
    answers, wrong = solutions(name)
    found = exercises(read(name))
    assert set(answers) == set(found), f"{name}: solutions for {sorted(answers)}, {sorted(found)}"
    assert set(wrong) == set(found), f"{name}: mistakes for {sorted(wrong)}"
    for ex in found:
        compile(answers[ex], f"{name}:{ex}", "exec")
        assert "TODO" not in answers[ex]
        assert wrong[ex], f"{name}:{ex} has no catalogued mistake"
        for m in wrong[ex]:
            assert set(m) == {"mistake", "says", "code"}, f"{name}:{ex}: {sorted(m)}"
            assert m["says"].strip() and m["code"] != answers[ex], f"{name}:{ex}: {m['mistake']}"
            compile(m["code"], f"{name}:{ex}:{m['mistake']}", "exec")
        names = [m["mistake"] for m in wrong[ex]]
        assert len(set(names)) == len(names), f"{name}:{ex}: a mistake listed twice"
    for ex, others in also_right(name).items():
        assert ex in found, f"{name}: right answers for {ex}, which is no exercise"
        for r in others:
            assert set(r) == {"answer", "code"}, f"{name}:{ex}: {sorted(r)}"
            compile(r["code"], f"{name}:{ex}:{r['answer']}", "exec")


def test_check_says_fill_in_then_right_or_raises_what_is_wrong(capsys):
    from harness.course import FILL_IN, RIGHT, WrongAnswer, check

    def judge(x):
        assert x == 4, f"{x} is not 2 + 2"
        return "2 + 2 = 4"

    for empty in (None, {"a": 1, "b": None}, [1, None]):
        assert check(empty, judge) is None  # nothing for a notebook cell to display
        assert FILL_IN in capsys.readouterr().out
    check(4, judge)
    assert RIGHT in capsys.readouterr().out
    with pytest.raises(WrongAnswer, match="5 is not 2 \\+ 2"):
        check(5, judge)


def test_check_records_each_verdict_for_a_grader(tmp_path, monkeypatch):
    import json

    from harness.course import RESULTS, WrongAnswer, check

    def judge(x):
        assert x == 4, f"{x} is not 2 + 2"
        return "2 + 2 = 4"

    out = tmp_path / "results.jsonl"
    monkeypatch.setenv("COURSE_RESULTS", str(out))
    RESULTS.clear()
    check(None, judge, name="sum")
    check((None, None, None), lambda x: "an empty basic_get is an answer", name="got")
    with pytest.raises(WrongAnswer):
        check(5, judge, name="sum")
    check(4, judge, name="sum")
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines == RESULTS
    assert [(r["name"], r["verdict"]) for r in lines] == [
        ("sum", "not answered"), ("got", "right"), ("sum", "not yet"), ("sum", "right")]
    assert lines[2]["message"].startswith("✘ not yet: 5 is not 2 + 2")


# ---- slow: run each notebook on a real broker ----------------------------------------------


def printed_by(cell: nbformat.NotebookNode) -> str:
    """What an executed cell printed."""
    return "".join(o.get("text", "") for o in cell.outputs)


def run_notebook(name: str, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> tuple[nbformat.NotebookNode, list[str], float]:
    """Execute a notebook top to bottom in one kernel, trying each exercise three ways.

    An exercise's answer cell and the cells tagged `uses:NAME` wait until its check. There
    they run as shipped (`None  # TODO`), and the check must say "fill this in first"
    without failing; then with each catalogued mistake, and the check must raise WrongAnswer
    with a message holding that mistake's `says`; then with the worked answer, which the
    check must accept and the rest of the notebook uses.
    (One pass, not a whole run as shipped and another solved: the cells before an answer
    are the same in both, and the two runs took 11 of CI's 40 minutes.) Returns the
    executed notebook, the problems found and the seconds it took.
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    require_rabbitmq()
    # The kernel inherits this environment: run folders in tmp, a broker node of our own.
    monkeypatch.setenv("LAB_RUNS", str(tmp_path / "runs"))
    # ...and this checkout's code, whichever copy of the project pip installed.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    monkeypatch.setenv("LAB_BROKER", os.environ.get("LAB_BROKER")
                       or os.environ.get("LAB_TEST_BROKER", "local"))
    nb = read(name)
    found = exercises(nb)
    answers, wrong = solutions(name)
    others = also_right(name)
    shipped = {ex: nb.cells[answer_at].source for ex, (answer_at, _) in found.items()}
    checks = {check: ex for ex, (_, check) in found.items()}
    deferred = set()
    for ex, (answer_at, _) in found.items():
        nb.cells[answer_at].source = answers[ex]
        deferred |= {answer_at} | {i for i, c in enumerate(nb.cells) if f"uses:{ex}" in tags(c)}
    problems: list[str] = []
    # IPC sockets instead of TCP ports: on a busy machine a port picked for the kernel can be
    # taken before the kernel binds it ("Address already in use"). A short folder: a unix
    # socket's path is limited to about 100 bytes.
    from jupyter_client.manager import KernelManager
    sockets = tempfile.mkdtemp(prefix="nbk")
    # A kernel asked to shut down gets 60 s, not jupyter_client's 5, before SIGKILL: a
    # notebook that failed before its broker.close() leaves the teardown to atexit, and a
    # cluster's (three nodes, their epmds, their namespaces) can take longer than 5 s. A
    # trial run's failed notebook 11 left a node, three epmds and three namespaces behind,
    # as a teardown killed mid-way would (not proven to be the cause).
    km = KernelManager(kernel_name="python3", transport="ipc", ip=os.path.join(sockets, "k"),
                       shutdown_wait_time=60.0)
    client = NotebookClient(nb, km=km, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})

    def run_copy(i: int, source: str | None = None) -> str:
        """Run a copy of cell i (with another source); return what it printed."""
        c = copy.deepcopy(nb.cells[i])
        c.source = c.source if source is None else source
        return printed_by(client.execute_cell(c, i))  # (the copy lands in nb.cells: restored)

    def answer_with(source: str, answer_at: int, uses: list[int]) -> None:
        """Run the answer cell with this source, then the cells that use the answer."""
        run_copy(answer_at, source)
        for i in uses:
            run_copy(i)

    def try_mistake(m: dict[str, str], answer_at: int, uses: list[int],
                    check_at: int) -> list[str]:
        """Run one mistake up to its check; what went wrong with the check's verdict."""
        try:
            answer_with(m["code"], answer_at, uses)
        except CellExecutionError as exc:
            return [f"the mistake broke a cell, not the check: {exc}"]
        try:
            printed = run_copy(check_at)
        except CellExecutionError as exc:
            if exc.ename != "WrongAnswer":
                return [f"the check raised {exc.ename}: {exc}"]
            if m["says"].lower() not in exc.evalue.lower():  # not the traceback: it holds code
                return [f"rejected, but the message does not say {m['says']!r}: {exc.evalue}"]
            return []
        return [f"the check ACCEPTED the mistake: {printed!r}"]

    started = time.monotonic()
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            if index in deferred:
                continue  # run just before its check, after the shipped and wrong trials
            if index in checks:
                ex = checks[index]
                answer_at = found[ex][0]
                uses = [i for i in range(answer_at + 1, index)
                        if f"uses:{ex}" in tags(nb.cells[i])]
                saved = {i: nb.cells[i] for i in (answer_at, *uses, index)}
                # As shipped: the cells that use the empty answer run, the check says so.
                try:
                    answer_with(shipped[ex], answer_at, uses)
                    printed = run_copy(index)
                    if FILL_IN not in printed:
                        problems.append(f"{ex}: as shipped, the check printed {printed!r}")
                except CellExecutionError as exc:
                    problems.append(f"{ex}: as shipped, a cell failed: {exc}")
                # Each catalogued mistake: the check must raise WrongAnswer, naming it.
                for m in wrong[ex]:
                    problems.extend(f"{ex} / {m['mistake']}: {p}" for p in
                                    try_mistake(m, answer_at, uses, index))
                # Each other right answer: the check must accept it as it does the worked one.
                for r in others.get(ex, []):
                    try:
                        answer_with(r["code"], answer_at, uses)
                        printed = run_copy(index)
                    except CellExecutionError as exc:
                        problems.append(f"{ex} / right too, {r['answer']}: rejected: {exc}")
                        continue
                    if RIGHT not in printed:
                        problems.append(f"{ex} / right too, {r['answer']}: printed {printed!r}")
                for i, original in saved.items():
                    nb.cells[i] = original
                for i in (answer_at, *uses):
                    client.execute_cell(nb.cells[i], i)
            try:
                client.execute_cell(cell, index)
            except CellExecutionError as exc:
                problems.append(f"cell {index} failed after "
                                f"{time.monotonic() - started:.0f} s: {exc}")
                break
    elapsed = time.monotonic() - started
    shutil.rmtree(sockets, ignore_errors=True)
    for ex, (_, check_at) in found.items():
        printed = printed_by(nb.cells[check_at])
        if RIGHT not in printed:
            problems.append(f"{ex}: the check printed {printed!r}, not {RIGHT!r}")
    return nb, problems, elapsed


@pytest.mark.slow
@pytest.mark.broker
@pytest.mark.parametrize("name", COURSE)
def test_notebook_runs_top_to_bottom(name, tmp_path, monkeypatch):
    nb, problems, elapsed = run_notebook(name, tmp_path, monkeypatch)
    assert not problems, f"{name}:\n" + "\n".join(problems)
    images = [o for c in code_cells(nb) for o in c.outputs
              if "image/png" in o.get("data", {})]
    assert images, f"{name} drew no chart"
    print(f"{name}: {elapsed:.0f} s, {len(images)} charts")


@pytest.mark.parametrize("name", COURSE)
def test_cells_after_a_check_that_use_its_answer_guard_against_none(name):
    """As shipped, such a cell runs with the answer still None (the run above gives it the
    worked answer), so it must test for that, as the cells tagged uses:NAME do."""
    nb = read(name)
    for ex, (answer_at, check_at) in exercises(nb).items():
        names = re.findall(r"^(\w+)\s*=", nb.cells[answer_at].source, re.M)
        for i in range(check_at + 1, len(nb.cells)):
            cell = nb.cells[i]
            used = [n for n in names if re.search(rf"\b{n}\b", cell.source)]
            if cell.cell_type != "code" or not used:
                continue
            guard = r"\b(if|and|or) (not )?{0}\b|\b{0} is (not )?None"
            guarded = any(re.search(guard.format(n), cell.source) for n in used)
            assert guarded, f"{name} cell {i} uses {used} from {ex} without a None test"
