"""A class graded at once: five real submissions (the reference solution, the naive example,
the starter as shipped, one that never starts, one that hangs and forks a runaway process)
graded two at a time, each on a broker node of its own; the gradebook, the class page, the
hanging one stopped at its limit without holding the others, nothing of it left running."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest
from conftest import require_rabbitmq

from harness.grading import classroom

ROOT = Path(__file__).resolve().parents[1]
ONLY = ["baseline"]

# An order service that answers /health, then answers an order one byte every two seconds
# for ever (no read time-out ever fires), after starting a process of its own that leaves
# its process group (setsid) and would run for an hour.
HANGING_ORDER = textwrap.dedent("""\
    import http.server, os, subprocess, sys, time
    runaway = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"],
                               start_new_session=True)
    with open(os.environ["RUNAWAY_PID_FILE"], "w") as f:
        f.write(str(runaway.pid))

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"status": "ok"}')

        def do_POST(self):
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            while True:
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(2)

    http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)\\
        .serve_forever()
""")


def lab_services_but(service: str, command: list[str], env: dict[str, str]) -> str:
    others = "\n".join(f'[{s}]\nuse = "lab"\n' for s in ("order", "inventory", "notification")
                       if s != service)
    env_toml = ", ".join(f'{k} = "{v}"' for k, v in env.items())
    return (f'name = "{service}-only"\n\n[{service}]\ncommand = {json.dumps(command)}\n'
            f"env = {{ {env_toml} }}\n\n{others}")


def make_class(folder: Path, runaway_pid_file: Path) -> None:
    """The five submissions, each a folder with its impl.toml, as students hand them in."""
    shutil.copytree(ROOT / "exercises/inventory", folder / "reference")  # the starter, solved
    shutil.copy(ROOT / "solutions/inventory/inventory.py", folder / "reference/inventory.py")
    shutil.copytree(ROOT / "examples/naive", folder / "naive")
    shutil.copytree(ROOT / "exercises/inventory", folder / "starter")
    never = folder / "never-starts"
    never.mkdir()
    (never / "inventory.py").write_text("print('my inventory')\n")
    (never / "impl.toml").write_text(lab_services_but(  # a typo in the file name
        "inventory", ["{python}", "inventry.py"],
        {"AMQP_URL": "{amqp_url}", "PORT": "{port}", "DATA_DIR": "{data_dir}"}))
    hang = folder / "hangs"
    hang.mkdir()
    (hang / "order.py").write_text(HANGING_ORDER)
    (hang / "impl.toml").write_text(lab_services_but(
        "order", ["{python}", "order.py"],
        {"PORT": "{port}", "RUNAWAY_PID_FILE": str(runaway_pid_file)}))


def test_submissions_from_a_folder_or_a_csv(tmp_path):
    for name in ("bob", "alice", "no-spec"):
        (tmp_path / "class" / name).mkdir(parents=True)
    for name in ("bob", "alice"):
        (tmp_path / "class" / name / "impl.toml").write_text("")
    found = classroom.find_submissions(tmp_path / "class")
    assert [s.student for s in found] == ["alice", "bob"]
    roster = tmp_path / "roster.csv"
    roster.write_text("name,path\nÉve O'Neil,class/alice/impl.toml\n../x,class/bob\n")
    found = classroom.find_submissions(roster)
    assert [s.student for s in found] == ["Éve_O_Neil", "x"]
    assert found[0].path == (tmp_path / "class/alice/impl.toml").resolve()
    roster.write_text("a,class/alice\na,class/bob\n")
    with pytest.raises(ValueError, match="two submissions named 'a'"):
        classroom.find_submissions(roster)


def test_a_grade_that_wrote_no_card_is_retried_for_the_machine_and_said_for_the_student(
        tmp_path):
    run = classroom.impl_run(only=["baseline"])
    sub = classroom.Submission("ann", tmp_path / "impl.toml")
    (tmp_path / "grade.log").write_text(
        "Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
        "harness.brokers.base.BrokerError: node lab-1@localhost exited with code 0 while "
        "starting\n")
    assert run.machine_failed(tmp_path)  # no broker: the machine's fault, tried again
    scored = run.score(sub, tmp_path, None)
    assert scored.score == 0 and scored.max_score == 10
    assert scored.not_run[0].reason.startswith("the grader stopped before writing a card: ")
    assert "BrokerError: node lab-1@localhost exited" in scored.not_run[0].reason
    (tmp_path / "grade.log").write_text("SyntaxError: invalid syntax\n")
    assert not run.machine_failed(tmp_path)


@pytest.mark.slow
@pytest.mark.broker
def test_a_class_of_five_graded_two_at_a_time(tmp_path):
    require_rabbitmq()
    subs_dir, out = tmp_path / "submissions", tmp_path / "graded"
    runaway_file = tmp_path / "runaway.pid"
    make_class(subs_dir, runaway_file)
    timeout = 120  # the honest grades take well under this; the hanging one is stopped here
    argv = [sys.executable, "-m", "harness", "grade-class", str(subs_dir), "--jobs", "2",
            "--small", "--only", ",".join(ONLY), "--timeout", str(timeout), "--out", str(out),
            "--rubric", str(ROOT / "examples" / "rubric.toml")]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    with (out / "gradebook.csv").open() as f:
        rows = {r["student"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"reference", "naive", "starter", "never-starts", "hangs"}
    assert rows["reference"]["status"] == "passed"
    assert rows["reference"]["score"] == rows["reference"]["max"] == "10"
    assert rows["reference"]["baseline/nothing lost"] == "PASS"
    assert rows["naive"]["baseline/nothing lost"] == "PASS"  # naive passes the baseline
    for student in ("starter", "never-starts", "hangs"):
        assert rows[student]["score"] == "0" and rows[student]["max"] == "10", rows[student]
        assert rows[student]["baseline/(scenario)"] == "NOT RUN"
    assert rows["hangs"]["status"] == "timed out"

    outcomes = {s: json.loads((out / "students" / s / "outcome.json").read_text())
                for s in rows}
    hang = outcomes["hangs"]
    assert hang["timed_out"] and hang["returncode"] is None
    # It did not hold the others: the rest were graded in the other slot while it hung.
    others = [o for s, o in outcomes.items() if s != "hangs"]
    assert sum(hang["started"] <= o["started"] and o["ended"] <= hang["ended"]
               for o in others) >= 2
    # The runaway process it started (in a session of its own) was killed with it.
    runaway = int(runaway_file.read_text())
    assert not psutil.pid_exists(runaway) or \
        psutil.Process(runaway).status() == psutil.STATUS_ZOMBIE

    # Each student's Gradescope results, and a cause said once for the stopped ones.
    from harness.grading import formats
    for s in rows:
        data = json.loads((out / "students" / s / "results.json").read_text())
        formats.validate_gradescope(data)
    starter = json.loads((out / "students/starter/results.json").read_text())
    assert "inventory service exited with code 3" in starter["tests"][0]["output"]
    timed = json.loads((out / "students/hangs/results.json").read_text())
    assert "time limit of 120 s" in timed["output"]

    linked = {o["student"]: o for o in json.loads((out / "class.json").read_text())}
    page = (out / "class.html").read_text()
    assert "id='fail-chart'" in page
    for s, o in outcomes.items():
        assert f"data-student='{s}'" in page
        if s != "hangs":
            o = linked[s]
            assert o["card"] and (out / o["card"]).exists() and f"href='{o['card']}'" in page
            # The card shows the same score as the gradebook.
            assert f"data-score='{rows[s]['score']}' data-max='10'" in \
                (out / o["card"]).read_text()
    # The mistakes grouped by cause, each with the students who made it.
    table = page[page.index("id='mistakes'"):page.index("id='students'")]
    rows_of = {code: [r for r in table.split("<tr class='mistake'>")[1:]
                      if f"exited with code {code}" in r] for code in (2, 3)}
    assert len(rows_of[3]) == 1 and "starter" in rows_of[3][0]  # the TODO left in
    assert len(rows_of[2]) == 1 and "never-starts" in rows_of[2][0]  # python: no such file
    assert any("time limit" in r and "hangs" in r for r in table.split("<tr")[1:])

    # Resumable: a second run grades nobody again (no new outcome), and --again would.
    before = {s: (out / "students" / s / "outcome.json").stat().st_mtime_ns for s in rows}
    again = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    after = {s: (out / "students" / s / "outcome.json").stat().st_mtime_ns for s in rows}
    assert before == after
