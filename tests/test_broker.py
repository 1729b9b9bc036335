"""Broker providers against a real RabbitMQ node (no mocks of RabbitMQ).

Tests marked `broker` skip when no rabbitmq-server release script is installed, but fail
under CI=true, where a missing broker is a broken setup rather than a laptop without one.
"""

from __future__ import annotations

import logging
import re
import select
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pika
import pytest
import requests
from conftest import require_rabbitmq

from harness.amqp import depth
from harness.brokers import (
    BrokerNotFound,
    BrokerSettings,
    DockerBroker,
    LocalBroker,
    find_server_script,
    open_broker,
)
from harness.waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]
NO_DOCKER = "unix:///nonexistent/rabbit-lab/docker.sock"


def live_processes_of(node: str) -> list[int]:
    """Non-zombie beam.smp, epmd and sh-wrapper processes whose environment names `node`."""
    found = set()
    for pattern in ("beam.smp", "epmd", "rabbitmq-server"):
        out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
        found.update(int(pid) for pid in out.split())
    mine = []
    for pid in sorted(found):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        if state != "Z" and f"RABBITMQ_NODENAME={node}".encode() in env:
            mine.append(pid)
    return mine


def publish_confirmed(url: str, queue: str, body: bytes) -> None:
    """Declare a durable queue and publish one persistent message, waiting for its confirm."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        ch.queue_declare(queue, durable=True)
        ch.confirm_delivery()
        ch.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2), mandatory=True)
    finally:
        conn.close()


def ready_count(url: str, queue: str) -> int | None:
    """Messages ready in a queue, or None while the queue does not exist (passive declare)."""
    try:
        return depth(url, queue)
    except pika.exceptions.ChannelClosedByBroker:
        return None


def get_one(url: str, queue: str) -> bytes | None:
    """Fetch and ack one message from a durable queue (None if it is empty)."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        ch.queue_declare(queue, durable=True)
        method, _props, body = ch.basic_get(queue)
        if method is None:
            return None
        ch.basic_ack(method.delivery_tag)
        return body
    finally:
        conn.close()


@pytest.fixture(scope="module")
def node():
    """One local node for the whole module (each start costs 5-9 s)."""
    require_rabbitmq()
    broker = open_broker("local")
    yield broker
    broker.close()


@pytest.fixture
def no_docker_no_url(monkeypatch):
    """An environment where auto can only find a local node."""
    monkeypatch.delenv("AMQP_URL", raising=False)
    monkeypatch.delenv("TESTCONTAINERS_HOST_OVERRIDE", raising=False)
    monkeypatch.setenv("DOCKER_HOST", NO_DOCKER)


@pytest.mark.broker
def test_publish_and_consume_persistent_message(node):
    queue = f"test-{uuid.uuid4().hex[:8]}"
    publish_confirmed(node.amqp_url, queue, b"hello")
    assert get_one(node.amqp_url, queue) == b"hello"


@pytest.mark.broker
def test_version_is_the_installed_release(node):
    version = node.version()
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), version
    # The Debian and conda layouts name their release dir rabbitmq_server-X.Y.Z.
    release = re.search(r"rabbitmq_server-(\d+\.\d+\.\d+)", str(Path(node.server_script).resolve()))
    if release:
        assert version == release.group(1)
    if node.server_script.startswith("/usr/lib/rabbitmq/"):
        assert version.startswith("3.10."), version


@pytest.mark.broker
def test_management_api_answers_with_fresh_queue_stats(node):
    r = requests.get(f"{node.management_url}/api/overview", auth=node.management_auth, timeout=5)
    assert r.status_code == 200
    assert r.json()["rabbitmq_version"] == node.version()

    # The stats settings were accepted by the node, and they make queue depth fresh:
    # with RabbitMQ's defaults the management API lags 5-10 s.
    env = node.rabbitmqctl("eval", "application:get_env(rabbit, collect_statistics_interval).")
    assert env.stdout.strip() == "{ok,500}"
    queue = f"test-{uuid.uuid4().hex[:8]}"
    for _ in range(3):
        publish_confirmed(node.amqp_url, queue, b"x")

    def depth() -> bool:
        url = f"{node.management_url}/api/queues/%2F/{queue}"
        doc = requests.get(url, auth=node.management_auth, timeout=5).json()
        return doc.get("messages") == 3

    # The management plugin collects in steps of a few hundred ms, slower on a busy node.
    wait_until(depth, 15, "management API to report 3 messages", interval=0.1)


@pytest.mark.broker
def declare_durable(url: str, queue: str) -> None:
    """Declare a durable queue, and nothing else."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        conn.channel().queue_declare(queue, durable=True)
    finally:
        conn.close()


def test_kill_and_restart_keep_a_confirmed_persistent_message(node):
    # Declare, then restart cleanly, so the queue's declaration is surely on disk: a queue
    # declared a moment before kill -9 may not survive on 3.10 (a broker fact, documented
    # in BROKER_FACTS.md; not what this test is about).
    queue = f"test-{uuid.uuid4().hex[:8]}"
    url = node.amqp_url
    declare_durable(url, queue)
    node.stop()
    node.restart()
    publish_confirmed(url, queue, b"survivor")
    node.kill()
    assert not node.running
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        pika.BlockingConnection(pika.URLParameters(url))
    node.restart()
    assert node.amqp_url == url  # same ports: clients reconnect to the same URL
    # A passive declare only looks: it never creates the queue, so a queue still being
    # recovered is waited for (bounded), not replaced by an empty one.
    wait_until(lambda: ready_count(url, queue) == 1, 30, f"{queue} recovered with its message")
    assert get_one(url, queue) == b"survivor"


@pytest.mark.slow
@pytest.mark.broker
def test_stop_and_restart(node):
    queue = f"test-{uuid.uuid4().hex[:8]}"
    publish_confirmed(node.amqp_url, queue, b"after-stop")
    node.stop()
    assert not node.running
    node.restart()
    assert get_one(node.amqp_url, queue) == b"after-stop"


@pytest.mark.broker
def test_url_provider_waits_but_cannot_stop(node, monkeypatch):
    monkeypatch.setenv("AMQP_URL", node.amqp_url)
    broker = open_broker()  # auto: AMQP_URL wins over Docker and local
    assert broker.provider == "url" and not broker.can_stop
    assert broker.management_url == "http://127.0.0.1:15672"
    assert broker.management_auth == ("guest", "guest")
    assert broker.version() == node.version()
    for fault in (broker.stop, broker.kill, broker.restart):
        with pytest.raises(NotImplementedError, match="not ours"):
            fault()
    broker.close()
    assert node.running


@pytest.mark.slow
@pytest.mark.broker
def test_auto_without_docker_picks_local_and_close_leaves_nothing(
        tmp_path, caplog, no_docker_no_url):
    require_rabbitmq()
    caplog.set_level(logging.INFO, logger="harness.brokers")
    workdir = tmp_path / "node"
    broker = open_broker(workdir=workdir)
    try:
        assert isinstance(broker, LocalBroker)
        info = [r.getMessage() for r in caplog.records
                if r.name == "harness.brokers" and r.levelno == logging.INFO]
        assert len(info) == 1, info
        assert "local" in info[0] and "Docker" in info[0]
        pids = broker.pids()
        assert len(pids) >= 3  # sh wrapper, beam.smp, epmd
        assert set(pids) <= set(live_processes_of(broker.node))
    finally:
        broker.close()
    broker.close()  # idempotent
    assert live_processes_of(broker.node) == []
    assert (workdir / "mnesia").is_dir()  # a user-given workdir is kept


@pytest.mark.slow
@pytest.mark.broker
def test_sigterm_to_python_still_cleans_up():
    require_rabbitmq()
    code = ("import time\nfrom harness.brokers import open_broker\n"
            "b = open_broker('local')\nprint(b.node, flush=True)\ntime.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 90)
        assert ready, "child did not start a node within 90 s"
        node_name = proc.stdout.readline().strip()
        assert live_processes_of(node_name)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()
    assert live_processes_of(node_name) == []


def test_unavailable_message_names_all_three_ways(no_docker_no_url):
    start = time.monotonic()
    with pytest.raises(BrokerNotFound) as err:
        open_broker(server_script="/nonexistent/rabbitmq-server")
    assert time.monotonic() - start < 10
    msg = str(err.value)
    needles = ("apt-get install rabbitmq-server", "conda install -c conda-forge rabbitmq-server",
               "Docker", "--broker amqp://", "AMQP_URL", "/nonexistent/rabbitmq-server")
    for needle in needles:
        assert needle in msg, needle


def test_docker_without_daemon_is_unavailable(no_docker_no_url):
    with pytest.raises(BrokerNotFound, match="Docker"):
        open_broker("docker")
    with pytest.raises(BrokerNotFound, match="no Docker daemon"):
        DockerBroker()


def test_settings_fall_back_to_the_environment(monkeypatch):
    monkeypatch.setenv("RABBITMQ_IMAGE", "localhost/rabbit:test")
    monkeypatch.setenv("AMQP_URL", "amqp://u:p@broker.example:5672/%2F")
    monkeypatch.setenv("RABBITMQ_SERVER", "/opt/rabbit/sbin/rabbitmq-server")
    s = BrokerSettings()
    assert s.image == "localhost/rabbit:test"
    assert s.url == "amqp://u:p@broker.example:5672/%2F"
    assert s.server_script == "/opt/rabbit/sbin/rabbitmq-server"
    assert BrokerSettings(image="other").image == "other"


def test_never_picks_the_debian_wrapper(monkeypatch):
    monkeypatch.delenv("RABBITMQ_SERVER", raising=False)
    monkeypatch.delenv("CONDA_PREFIX", raising=False)
    monkeypatch.setenv("PATH", "/usr/sbin:/sbin")
    found = find_server_script()  # /usr/sbin/rabbitmq-server would switch to user rabbitmq
    assert found is None or Path(found).resolve().name != "rabbitmq-script-wrapper"
