"""A grade's slot holds what a submission does to it: a time limit, a file-size limit, and
every process it started killed at the end, including one that left its process group."""

from __future__ import annotations

import sys
import textwrap

import psutil

from harness.grading.slots import run_slot


def python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def test_a_slot_that_overruns_is_stopped_with_its_children(tmp_path):
    pid_file = tmp_path / "child.pid"
    result = run_slot(python(f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        time.sleep(600)
        """), log=tmp_path / "log", timeout=3)
    assert result.timed_out and result.returncode is None
    child = int(pid_file.read_text())
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == "zombie"


def test_a_runaway_process_in_a_session_of_its_own_is_killed_after_the_slot(tmp_path):
    pid_file = tmp_path / "runaway.pid"
    result = run_slot(python(f"""
        import subprocess, sys
        runaway = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                                   start_new_session=True)
        open({str(pid_file)!r}, "w").write(str(runaway.pid))
        """), log=tmp_path / "log", timeout=60)
    assert result.returncode == 0 and not result.timed_out
    assert result.leftovers_killed >= 1
    runaway = int(pid_file.read_text())
    assert not psutil.pid_exists(runaway) or psutil.Process(runaway).status() == "zombie"


def test_a_file_written_without_end_stops_at_the_limit(tmp_path):
    big = tmp_path / "big"
    result = run_slot(python(f"""
        with open({str(big)!r}, "wb") as f:
            for _ in range(64):
                f.write(b"x" * 2**20)
        """), log=tmp_path / "log", timeout=60, max_file_mb=4)
    assert result.returncode != 0
    assert big.stat().st_size <= 4 * 2**20
