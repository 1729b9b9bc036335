"""Static checks of docker-compose's `cluster` profile: offline, no container engine.

CI has no Docker here, so the profile is proven the way the rest of the compose file is:
the compose spec accepts it (tests/test_containers_static.py validates the whole file with
check-jsonschema), and these tests check that the three nodes can find each other (same
cookie, peer discovery naming their hostnames) and that the services get all three.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
RABBIT_DIR = ROOT / "docker" / "rabbitmq"
NODES = ("rabbit-1", "rabbit-2", "rabbit-3")
CLUSTER_SERVICES = {"order-cluster": 5001, "inventory-cluster": 5002,
                    "notification-cluster": 5003}


@pytest.fixture(scope="module")
def compose() -> dict:
    return YAML(typ="safe").load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


def _conf(path: Path) -> dict[str, str]:
    pairs = (line.partition("=") for line in path.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#"))
    return {k.strip(): v.strip() for k, _, v in pairs}


def test_three_nodes_only_in_the_cluster_profile_with_one_cookie(compose):
    services = compose["services"]
    for name in NODES:
        node = services[name]
        assert node["profiles"] == ["cluster"]
        assert node["hostname"] == name
        assert node["image"] == services["rabbitmq"]["image"]
        env = node["environment"]
        assert env["LAB_ERLANG_COOKIE"] == "${LAB_ERLANG_COOKIE:-}"  # from .env, never here
        assert env["RABBIT_LAB_CLUSTER"] == "1" and env["LAB_QUEUE_TYPE"] == "quorum"
        mounts = {v.split(":")[0]: v.split(":")[1] for v in node["volumes"]}
        assert mounts["./docker/rabbitmq/cluster.conf"].startswith("/etc/rabbitmq/conf.d/")
        assert "check_port_connectivity" in node["healthcheck"]["test"]
    host_ports = [p.split(":")[-2] for n in NODES for p in services[n]["ports"]]
    assert len(set(host_ports)) == len(host_ports) == 6
    assert "profiles" not in services["rabbitmq"]  # the single broker stays the default


def test_peer_discovery_names_exactly_the_three_nodes():
    conf = _conf(RABBIT_DIR / "cluster.conf")
    assert conf["cluster_formation.peer_discovery_backend"] == "classic_config"
    listed = sorted(v for k, v in conf.items()
                    if k.startswith("cluster_formation.classic_config.nodes."))
    assert listed == [f"rabbit@{n}" for n in NODES]
    assert conf["cluster_partition_handling"] == "pause_minority"


def test_cluster_services_get_every_node_and_wait_for_all_three(compose):
    services = compose["services"]
    for name, port in CLUSTER_SERVICES.items():
        spec = services[name]
        assert spec["profiles"] == ["cluster"]
        assert spec["command"] == ["python", "-m", f"lab_services.{name.split('-')[0]}"]
        assert set(spec["depends_on"]) == set(NODES)
        assert all(d["condition"] == "service_healthy" for d in spec["depends_on"].values())
        env = spec["environment"]
        urls = env["AMQP_URLS"].split(",")
        assert [u.split("@")[1].split(":")[0] for u in urls] == list(NODES)
        assert env["AMQP_URL"] == urls[0]
        assert env["LAB_QUEUE_TYPE"] == "quorum"
        assert str(env["PORT"]) == str(port)
        assert spec["volumes"] == ["cluster-service-data:/data"]  # not the single lab's stores
    default_ports = {p.split(":")[-2] for s in ("order", "inventory", "notification")
                     for p in services[f"{s}_service"]["ports"]}
    cluster_ports = {p.split(":")[-2] for s in CLUSTER_SERVICES for p in services[s]["ports"]}
    assert not default_ports & cluster_ports


def _run_start(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir(exist_ok=True)
    entry = fake_bin / "docker-entrypoint.sh"
    entry.write_text('#!/bin/sh\necho "started: $*"\n')
    entry.chmod(0o755)
    base = {"PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}",
            "RABBITMQ_DEFAULT_USER": "student", "RABBITMQ_DEFAULT_PASS": "pw",
            "LAB_QUEUE_TYPE": "quorum", "RABBIT_LAB_CONFIG_DIR": str(RABBIT_DIR),
            "RABBIT_LAB_DEFINITIONS_DIR": str(tmp_path / "defs"),
            "RABBIT_LAB_COOKIE_FILE": str(tmp_path / "cookie")}
    return subprocess.run(["sh", str(RABBIT_DIR / "start.sh")], env={**base, **env},
                          capture_output=True, text=True, timeout=30)


def test_start_script_writes_the_shared_cookie_readable_by_its_owner_only(tmp_path):
    result = _run_start(tmp_path, RABBIT_LAB_CLUSTER="1", LAB_ERLANG_COOKIE="c0ok1e" * 8)
    assert result.returncode == 0, result.stderr
    cookie = tmp_path / "cookie"
    assert cookie.read_text() == "c0ok1e" * 8
    assert stat.S_IMODE(cookie.stat().st_mode) == 0o400


def test_start_script_refuses_a_cluster_node_without_a_cookie(tmp_path):
    result = _run_start(tmp_path, RABBIT_LAB_CLUSTER="1")
    assert result.returncode != 0
    assert "LAB_ERLANG_COOKIE" in result.stderr
    assert not (tmp_path / "cookie").exists()


def test_a_single_broker_needs_no_cookie(tmp_path):
    result = _run_start(tmp_path)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "cookie").exists()
