"""The Docker paths for real: the harness's docker provider (testcontainers) and
docker-compose end to end, on whatever Docker-compatible engine DOCKER_HOST names.

CI stands podman in for Docker (`.ci/container-engine.sh`) with local stand-in images; the
tests take every image name from the environment and never assume an official one.
Locally without an engine they skip; under CI=true they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import requests
from conftest import no_broker

from harness import scenarios
from harness.amqp import depth
from harness.brokers import docker_available, open_broker
from harness.brokers import management as admin
from harness.lab import Lab
from harness.ports import free_ports
from harness.waiting import wait_until
from lab_services import topology as topo

pytestmark = [pytest.mark.container, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
ENGINE_TIMEOUT_S = 30.0
COMPOSE_CONTAINERS = ("rabbitmq", "order-service", "inventory-service", "notification-service")
BURGER = {"user_id": "u1", "items": [{"item_id": "item_1", "quantity": 2, "price": 10.0}]}


@pytest.fixture(scope="module")
def engine():
    """A docker-py client for the engine, or skip (fail under CI) when none answers."""
    # 30 s, not the provider's 2: a podman service answers its first request slowly on a
    # loaded machine (CI's other worker), and a missing engine refuses at once anyway.
    ok, why = docker_available(ENGINE_TIMEOUT_S)
    if not ok:
        no_broker(f"no Docker-compatible engine: {why} (CI runs .ci/container-engine.sh)")
    import docker
    client = docker.from_env()
    yield client
    client.close()


def rabbit_containers(engine, image: str) -> list:
    return engine.containers.list(all=True, filters={"ancestor": image})


def test_docker_provider_runs_the_baseline_and_survives_stop_kill_restart(engine, tmp_path):
    image = os.environ.get("RABBITMQ_IMAGE", "rabbitmq:4.1.4-management")
    before = {c.id for c in rabbit_containers(engine, image)}
    with open_broker("docker", docker_ping_timeout=ENGINE_TIMEOUT_S) as broker:
        assert broker.provider == "docker"
        result = scenarios.baseline(broker, orders=30, out=tmp_path, progress=False)
        assert result.valid, result.verdict.problems
        assert result.summary["notified"] == 30
        with Lab(broker, workdir=tmp_path / "lab") as lab:
            pids = {n: s.proc.pid for n, s in lab.services.items()}
            for fault in (broker.stop, broker.kill):
                fault()
                broker.restart()  # the same container: same data, same host ports
                for svc in lab.services.values():
                    svc.wait_healthy(90)
                r = lab.place_order("after-" + fault.__name__, BURGER["items"])
                assert r.status_code == 201, r.text
                lab.wait_notified([r.json()["order_id"]], 60)
            assert {n: s.proc.pid for n, s in lab.services.items()} == pids
            assert all(lab.get(n, "/health")["reconnects"] >= 2 for n in lab.services)
    left = {c.id for c in rabbit_containers(engine, image)} - before
    assert left == set(), "the docker provider left a container behind"


# ---- docker-compose end to end ----------------------------------------------------------


def compose_cmd() -> list[str]:
    """docker-compose v1, or the v2 plugin."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return ["docker", "compose"]


@pytest.fixture(scope="module")
def compose(engine, tmp_path_factory):
    """`docker-compose up -d --build` on free host ports; `down -v` afterwards."""
    amqp, mgmt, order, inventory, notification = free_ports(5)
    password = uuid.uuid4().hex[:12]
    env_file = tmp_path_factory.mktemp("compose") / ".env"
    env_file.write_text("\n".join([
        "RABBITMQ_DEFAULT_USER=admin", f"RABBITMQ_DEFAULT_PASS={password}",
        f"RABBITMQ_AMQP_PORT={amqp}", f"RABBITMQ_MANAGEMENT_PORT={mgmt}",
        f"ORDER_PORT={order}", f"INVENTORY_PORT={inventory}",
        f"NOTIFICATION_PORT={notification}",
        *(f"{k}={os.environ[k]}" for k in ("RABBITMQ_IMAGE", "PYTHON_IMAGE") if k in os.environ),
    ]) + "\n")
    project = f"rabbitlab{uuid.uuid4().hex[:6]}"
    base = [*compose_cmd(), "-p", project, "--env-file", str(env_file), "-f",
            str(ROOT / "docker-compose.yml")]

    def run(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        return subprocess.run([*base, *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout)

    up = run("up", "-d", "--build")
    info = {"run": run, "project": project, "password": password,
            "amqp": f"amqp://admin:{password}@127.0.0.1:{amqp}/%2F",
            "mgmt": f"http://127.0.0.1:{mgmt}", "order": f"http://127.0.0.1:{order}",
            "inventory": f"http://127.0.0.1:{inventory}",
            "notification": f"http://127.0.0.1:{notification}"}
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        yield info
    finally:
        down = run("down", "-v", timeout=300)
        info["down"] = down


def healthy(url: str) -> bool:
    try:
        return requests.get(url + "/health", timeout=3).status_code == 200
    except requests.RequestException:
        return False


def test_compose_brings_up_a_healthy_broker_with_the_topology(engine, compose):
    for name in COMPOSE_CONTAINERS:
        wait_until(lambda n=name: engine.containers.get(n).attrs["State"].get("Health", {})
                   .get("Status") == "healthy", 180, f"{name} healthy")

    class Mgmt:  # the compose broker, as harness.brokers.management expects it
        management_url = compose["mgmt"]
        management_auth = ("admin", compose["password"])

    queues = {q["name"]: q for q in admin.queues(Mgmt, "/")}
    assert set(topo.build_topology().queue_names()) <= set(queues)
    for name in (topo.QUEUE_ORDER_PLACED, topo.QUEUE_INVENTORY_RESERVED,
                 topo.QUEUE_INVENTORY_FAILED):
        assert queues[name]["arguments"]["x-dead-letter-exchange"] == topo.DEAD_LETTERS
    # The .env user is the only login: the well-known guest account does not exist.
    r = requests.get(compose["mgmt"] + "/api/overview", auth=("guest", "guest"), timeout=5)
    assert r.status_code == 401


def test_compose_runs_the_original_curl_flow_and_the_backlog(engine, compose):
    for name in ("order", "inventory", "notification"):
        wait_until(lambda n=name: healthy(compose[n]), 180, f"{name} service healthy")
    stock_before = requests.get(compose["inventory"] + "/inventory", timeout=5).json()
    r = requests.post(compose["order"] + "/order", json=BURGER, timeout=15)
    assert r.status_code == 201 and r.json()["status"] == "PENDING"
    order_id = r.json()["order_id"]
    wait_until(lambda: any(n["order_id"] == order_id for n in requests.get(
        compose["notification"] + "/notifications", timeout=5).json()), 60, "notified")
    stock = requests.get(compose["inventory"] + "/inventory", timeout=5).json()
    assert stock["item_1"]["stock"] == stock_before["item_1"]["stock"] - 2

    # The original lab's backlog exercise, with the container names it uses.
    subprocess.run(["docker", "stop", "inventory-service"], check=True, capture_output=True,
                   timeout=120)
    ids = []
    for i in range(10):
        r = requests.post(compose["order"] + "/order", timeout=15,
                          json={"user_id": f"backlog{i}", "items": BURGER["items"]})
        assert r.status_code == 201
        ids.append(r.json()["order_id"])
    wait_until(lambda: depth(compose["amqp"], topo.QUEUE_ORDER_PLACED) == 10, 60, "a backlog of 10")
    subprocess.run(["docker", "start", "inventory-service"], check=True, capture_output=True,
                   timeout=120)
    wait_until(lambda: depth(compose["amqp"], topo.QUEUE_ORDER_PLACED) == 0, 120, "backlog drained")
    wait_until(lambda: set(ids) <= {n["order_id"] for n in requests.get(
        compose["notification"] + "/notifications", timeout=5).json()}, 60, "all notified")


def test_compose_down_leaves_nothing_behind(engine, compose):
    down = compose["run"]("down", "-v", timeout=300)
    assert down.returncode == 0, down.stderr[-2000:]
    names = {c.name for c in engine.containers.list(all=True)}
    assert names.isdisjoint(COMPOSE_CONTAINERS)
    volumes = {v.name for v in engine.volumes.list()}
    assert not any(v.startswith(compose["project"]) for v in volumes)
