"""The course notebooks: committed stripped and well-formed (fast), and run top to bottom (slow).

The slow test executes every notebook on a real broker with nbclient, as a student would,
and asserts that each ran without an error and drew at least one chart. It skips locally
without a rabbitmq-server release script, but fails under CI=true.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import nbformat
import pytest
from conftest import require_rabbitmq

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
COURSE = (
    "00_setup_and_tour.ipynb",
    "01_baseline.ipynb",
    "02_backlog_drain.ipynb",
    "03_idempotency.ipynb",
    "04_dead_letters.ipynb",
    "05_resilience.ipynb",
    "06_queueing_model.ipynb",
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


def test_exactly_the_seven_course_notebooks():
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
    assert 'open_broker(os.environ.get("LAB_BROKER", "auto"))' in text
    assert "broker.close()" in sources[-1], "the last code cell closes the broker"
    checks = [s for s in sources if s.startswith("# Check") and "assert" in s]
    assert checks, "an exercise check cell (starting '# Check', with asserts)"
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "Exercise" in markdown and "Predict" in markdown
    if "scenarios." in text:
        assert 'os.environ.get("LAB_RUNS", "runs")' in text, "runs go to LAB_RUNS"


def test_readme_lists_every_notebook():
    readme = (NOTEBOOK_DIR / "README.md").read_text()
    assert "jupyter lab notebooks/" in readme
    for name in COURSE:
        assert name in readme, f"notebooks/README.md does not mention {name}"


# ---- slow: run each notebook on a real broker ----------------------------------------------


@pytest.mark.slow
@pytest.mark.broker
@pytest.mark.parametrize("name", COURSE)
def test_notebook_runs_top_to_bottom(name, tmp_path, monkeypatch):
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    require_rabbitmq()
    # The kernel inherits this environment: run folders in tmp, a broker node of our own.
    monkeypatch.setenv("LAB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("LAB_BROKER", os.environ.get("LAB_BROKER")
                       or os.environ.get("LAB_TEST_BROKER", "local"))
    nb = read(name)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    started = time.monotonic()
    try:
        client.execute()
    except CellExecutionError as exc:
        pytest.fail(f"{name} failed after {time.monotonic() - started:.0f} s:\n{exc}")
    errors = [o for c in code_cells(nb) for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{name}: {errors[0].ename}: {errors[0].evalue}"
    images = [o for c in code_cells(nb) for o in c.outputs
              if "image/png" in o.get("data", {})]
    assert images, f"{name} drew no chart"
    print(f"{name}: {time.monotonic() - started:.0f} s, {len(images)} charts")
