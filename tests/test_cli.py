"""The command line as a user runs it: run folders, exit codes, and nothing left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import psutil
import pytest
from conftest import require_rabbitmq

ROOT = Path(__file__).resolve().parents[1]


# Every process a CLI run starts inherits this variable (services, the node's beam.smp, its
# epmd, which daemonizes and leaves the process tree): a process carrying our value is ours,
# whatever else runs on the machine.
RUN_MARKER = "RABBIT_LAB_TEST_RUN"


def processes_of_run(marker: str) -> list[psutil.Process]:
    """Live processes whose environment carries this run's marker (zombies are not running)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(RUN_MARKER) == marker and \
                    proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600):
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout, env={**os.environ, **(env or {})})


def test_help_lists_the_commands():
    out = run_cli("--help").stdout
    assert all(word in out for word in ("run", "bench", "up", "grade", "contract"))
    out = run_cli("run", "--help").stdout
    for scenario in ("baseline", "backlog-drain", "idempotency", "crash-window", "dlq",
                     "reconnect", "chaos", "duplicates", "restart-idempotency", "malformed",
                     "kill-9", "all"):
        assert scenario in out
    for option in ("--seed", "--rate", "--orders"):
        assert option in out


def test_an_option_the_scenario_does_not_take_is_refused_before_any_broker_starts(tmp_path):
    proc = run_cli("run", "crash-window", "--rate", "5", "--out", str(tmp_path), timeout=60)
    assert proc.returncode == 2 and "crash-window takes no --rate" in proc.stderr
    assert not list(tmp_path.iterdir())


def test_a_bad_spec_or_a_white_box_scenario_on_another_impl_is_a_clear_error(tmp_path):
    bad = tmp_path / "impl.toml"
    bad.write_text("[order]\ncommand = 'x'\nport = 'five'\n")
    proc = run_cli("grade", "--impl", str(bad), "--out", str(tmp_path), timeout=60)
    assert proc.returncode == 2 and "'order.port'" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_cli("run", "crash-window", "--impl", "examples/naive/impl.toml",
                   "--out", str(tmp_path), timeout=60)
    assert proc.returncode == 2 and "white-box" in proc.stderr and "Traceback" not in proc.stderr


def test_contract_command_says_the_page_matches():
    proc = run_cli("contract", timeout=60)
    assert proc.returncode == 0 and "matches the code" in proc.stdout


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
    marker = uuid.uuid4().hex
    # The marker finds what it marks (so that an empty answer below means something).
    probe = subprocess.Popen(["sleep", "60"], env={**os.environ, RUN_MARKER: marker})
    try:
        assert [p.pid for p in processes_of_run(marker)] == [probe.pid]
    finally:
        probe.kill()
        probe.wait()
    proc = run_cli("run", "baseline", "--orders", "30", "--broker", "local",
                   "--out", str(tmp_path), env={RUN_MARKER: marker})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (folder,) = tmp_path.glob("baseline-*")
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["valid"] is True and summary["notified"] == 30 and summary["lost"] == 0
    assert summary["broker"]["provider"] == "local"
    for key in ("orders_placed", "reserved", "failed", "dlq_messages", "duplicate_notifications",
                "latency_ms", "stock_conserved"):
        assert key in summary
    assert "VALID" in proc.stdout
    left = processes_of_run(marker)
    assert left == [], [(p.pid, p.name(), p.cmdline()[:3]) for p in left]


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
    from harness.scenarios import registry
    # A scenario that needs a 3-node cluster is skipped on a single node, and says so.
    expected = [n for n, sc in registry.scenarios().items() if not sc.needs_cluster]
    assert sorted(s["scenario"] for s in summaries) == sorted(expected)
    assert "needs a 3-node cluster" in proc.stderr
    assert all(s["valid"] for s in summaries)
    for s in summaries:
        assert s["scenario"] in report
    # The scenarios that restart the broker ran alongside, each on a local node of its own.
    restarting = [n for n in expected if registry.get(n).needs_restartable_broker]
    assert f"{', '.join(restarting)} ran alongside the others, each on a node of its own" \
        in report
    assert "every verdict valid" in proc.stdout
