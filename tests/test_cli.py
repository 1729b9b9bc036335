"""The command line as a user runs it: run folders, exit codes, and nothing left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_rabbitmq

ROOT = Path(__file__).resolve().parents[1]


def harness_processes() -> set[int]:
    """Live processes a harness run could leave behind: nodes, epmd, services."""
    found = set()
    for pattern in ("beam.smp", "epmd", "lab_services."):
        out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
        for pid in map(int, out.split()):
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z":  # zombies are reaped lazily here and are not running
                found.add(pid)
    return found


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600):
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout, env={**os.environ, **(env or {})})


def test_help_lists_the_commands():
    out = run_cli("--help").stdout
    assert all(word in out for word in ("run", "bench", "up"))
    out = run_cli("run", "--help").stdout
    for scenario in ("baseline", "backlog-drain", "idempotency", "crash-window", "dlq",
                     "reconnect", "all"):
        assert scenario in out


def test_without_a_broker_the_error_says_how_to_get_one(tmp_path):
    env = {"RABBITMQ_SERVER": str(tmp_path / "no-such-rabbitmq-server"),
           "DOCKER_HOST": "unix:///nonexistent/docker.sock", "AMQP_URL": ""}
    proc = run_cli("run", "baseline", "--out", str(tmp_path), env=env, timeout=60)
    assert proc.returncode == 2
    for way in ("apt-get install rabbitmq-server", "conda install", "Docker", "AMQP_URL"):
        assert way in proc.stderr


@pytest.mark.broker
@pytest.mark.slow
def test_run_baseline_starts_its_own_broker_and_leaves_nothing_behind(tmp_path):
    require_rabbitmq()
    before = harness_processes()
    proc = run_cli("run", "baseline", "--orders", "30", "--broker", "local",
                   "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (folder,) = tmp_path.glob("baseline-*")
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["valid"] is True and summary["notified"] == 30 and summary["lost"] == 0
    assert summary["broker"]["provider"] == "local"
    for key in ("orders_placed", "reserved", "failed", "dlq_messages", "duplicate_notifications",
                "latency_ms", "stock_conserved"):
        assert key in summary
    assert "VALID" in proc.stdout
    assert harness_processes() - before == set()


@pytest.mark.broker
def test_run_baseline_on_a_given_broker_url(broker, tmp_path):
    env = {"RABBITMQ_MANAGEMENT_URL": broker.management_url or ""}
    proc = run_cli("run", "baseline", "--orders", "10", "--broker", broker.amqp_url,
                   "--out", str(tmp_path), env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (folder,) = tmp_path.glob("baseline-*")
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["broker"]["provider"] == "url" and summary["notified"] == 10


@pytest.mark.broker
@pytest.mark.slow
def test_run_all_writes_one_report_with_every_verdict(tmp_path):
    require_rabbitmq()
    proc = run_cli("run", "all", "--orders", "30", "--broker", "local",
                   "--out", str(tmp_path), timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (folder,) = tmp_path.glob("all-*")
    report = (folder / "report.md").read_text()
    summaries = [json.loads(p.read_text()) for p in folder.glob("*/summary.json")]
    assert sorted(s["scenario"] for s in summaries) == sorted(
        ["baseline", "backlog-drain", "idempotency", "crash-window", "dlq", "reconnect"])
    assert all(s["valid"] for s in summaries)
    for s in summaries:
        assert s["scenario"] in report
    assert "every verdict valid" in proc.stdout
