"""Static checks of the container and conda files: fast, offline, no container engine.

They guard what a broken compose path would only reveal at `docker-compose up`: a file the
compose schema rejects, definitions that drifted from lab_services.topology, an environment
that disagrees with pyproject.toml, an image that installs something other than this
project, and credentials written into files that are committed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version
from ruamel.yaml import YAML

from lab_services import topology

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
RABBIT_DIR = ROOT / "docker" / "rabbitmq"
DEFINITIONS = {
    "classic": RABBIT_DIR / "definitions.json",
    "quorum": RABBIT_DIR / "definitions-quorum.json",
}
# Service names as in the original lab's handout (`docker-compose logs -f order_service`).
SERVICES = {
    "order_service": ("order-service", 5001),
    "inventory_service": ("inventory-service", 5002),
    "notification_service": ("notification-service", 5003),
}
# Conda packages that are not Python distributions, so pyproject.toml has no say on them.
CONDA_NON_PYTHON = {"python", "pip", "rabbitmq-server", "erlang"}


def load_yaml(path: Path):
    return YAML(typ="safe").load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_yaml(COMPOSE)


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def env_example() -> dict[str, str]:
    pairs = {}
    for line in (ROOT / ".env.example").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


# --- compose -------------------------------------------------------------------------------


def test_compose_file_validates_against_the_compose_spec():
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(COMPOSE)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_rabbitmq_service_uses_a_configurable_4x_management_image(compose):
    rabbit = compose["services"]["rabbitmq"]
    match = re.fullmatch(r"\$\{RABBITMQ_IMAGE:-rabbitmq:(\d+)\.[\w.]+-management\}",
                         rabbit["image"])
    assert match and int(match.group(1)) >= 4, rabbit["image"]


def test_rabbitmq_publishes_amqp_and_management_and_checks_its_listeners(compose):
    rabbit = compose["services"]["rabbitmq"]
    assert {5672, 15672} <= {int(str(p).rsplit(":", 1)[-1]) for p in rabbit["ports"]}
    assert rabbit["healthcheck"]["test"][:2] == ["CMD", "rabbitmq-diagnostics"]
    assert "check_port_connectivity" in rabbit["healthcheck"]["test"]


def test_rabbitmq_loads_the_committed_definitions_through_its_config(compose):
    rabbit = compose["services"]["rabbitmq"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in rabbit["volumes"]}
    assert mounts["./docker/rabbitmq/rabbitmq.conf"] == "/etc/rabbitmq/rabbitmq.conf"
    assert mounts["./docker/rabbitmq"] == "/etc/rabbitmq/rabbit-lab"
    assert rabbit["command"] == ["sh", "/etc/rabbitmq/rabbit-lab/start.sh"]

    conf = dict(
        (k.strip(), v.strip())
        for k, _, v in (
            line.partition("=")
            for line in (RABBIT_DIR / "rabbitmq.conf").read_text().splitlines()
            if line.strip() and not line.startswith("#")
        )
    )
    assert conf["collect_statistics_interval"] == "1000"
    start = (RABBIT_DIR / "start.sh").read_text()
    # start.sh assembles the folder that rabbitmq.conf imports.
    assert f"RABBIT_LAB_DEFINITIONS_DIR:-{conf['load_definitions']}" in start


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_each_service_has_its_name_port_health_and_waits_for_a_healthy_broker(compose, service):
    container_name, port = SERVICES[service]
    spec = compose["services"][service]
    assert spec["container_name"] == container_name
    assert spec["command"] == ["python", "-m", f"lab_services.{service.removesuffix('_service')}"]
    assert any(str(p).endswith(f":{port}") for p in spec["ports"])
    assert str(spec["environment"]["PORT"]) == str(port)
    assert spec["environment"]["HOST"] == "0.0.0.0"
    assert spec["healthcheck"]["test"][0] == "CMD"
    assert spec["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
    assert spec["build"] == {
        "context": ".",
        "dockerfile": "docker/Dockerfile",
        "args": {"PYTHON_IMAGE": "${PYTHON_IMAGE:-python:3.11-slim}"},
    }


def test_services_reach_the_broker_with_the_env_file_credentials(compose):
    for service in SERVICES:
        url = compose["services"][service]["environment"]["AMQP_URL"]
        assert re.fullmatch(
            r"amqp://\$\{RABBITMQ_DEFAULT_USER[^}]*\}:\$\{RABBITMQ_DEFAULT_PASS[^}]*\}"
            r"@rabbitmq:5672/%2F",
            url,
        ), url


# --- definitions ---------------------------------------------------------------------------


@pytest.mark.parametrize("queue_type", sorted(DEFINITIONS))
def test_committed_definitions_are_what_the_topology_generates(tmp_path, queue_type):
    rendered = tmp_path / "definitions.json"
    topology.main(["definitions", "--queue-type", queue_type, "-o", str(rendered)])
    committed = DEFINITIONS[queue_type]
    assert committed.read_text(encoding="utf-8") == rendered.read_text(encoding="utf-8"), (
        f"{committed.relative_to(ROOT)} is stale: regenerate it with "
        f"python -m lab_services.topology definitions --queue-type {queue_type} -o {committed}"
    )


@pytest.mark.parametrize("queue_type", sorted(DEFINITIONS))
def test_definitions_hold_topology_and_no_users(queue_type):
    doc = json.loads(DEFINITIONS[queue_type].read_text(encoding="utf-8"))
    assert not {"users", "permissions"} & doc.keys()
    assert "password" not in json.dumps(doc)
    dead_lettered = [q for q in doc["queues"] if "x-dead-letter-exchange" in q["arguments"]]
    assert dead_lettered
    assert {q["arguments"]["x-queue-type"] for q in doc["queues"]} == {queue_type}


def test_start_script_writes_a_valid_user_file_for_any_password(tmp_path):
    # A password with JSON's special characters must still come out as a JSON string.
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    entrypoint = fake_bin / "docker-entrypoint.sh"
    entrypoint.write_text('#!/bin/sh\necho "started: $*"\n')
    entrypoint.chmod(0o755)
    dest = tmp_path / "definitions"
    password = 'p"a\\ss w0rd'
    env = {
        "PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}",
        "RABBITMQ_DEFAULT_USER": "student",
        "RABBITMQ_DEFAULT_PASS": password,
        "LAB_QUEUE_TYPE": "quorum",
        "RABBIT_LAB_CONFIG_DIR": str(RABBIT_DIR),
        "RABBIT_LAB_DEFINITIONS_DIR": str(dest),
    }
    result = subprocess.run(["sh", str(RABBIT_DIR / "start.sh")], env=env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "started: rabbitmq-server"
    assert sorted(p.name for p in dest.iterdir()) == ["00-topology.json", "10-user.json"]
    assert (dest / "00-topology.json").read_bytes() == DEFINITIONS["quorum"].read_bytes()
    user_doc = json.loads((dest / "10-user.json").read_text())
    assert user_doc["users"] == [{"name": "student", "password": password,
                                  "tags": "administrator"}]
    assert user_doc["permissions"][0]["user"] == "student"
    assert (dest / "10-user.json").stat().st_mode & 0o077 == 0


def test_start_script_refuses_to_run_without_credentials(tmp_path):
    env = {"PATH": os.environ["PATH"], "RABBIT_LAB_CONFIG_DIR": str(RABBIT_DIR),
           "RABBIT_LAB_DEFINITIONS_DIR": str(tmp_path / "d")}
    result = subprocess.run(["sh", str(RABBIT_DIR / "start.sh")], env=env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode != 0
    assert "RABBITMQ_DEFAULT_USER" in result.stderr


# --- images --------------------------------------------------------------------------------


def test_dockerfile_installs_this_project_in_a_venv_as_a_non_root_user():
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    assert re.search(r"^FROM \$\{PYTHON_IMAGE\}$", text, re.M)
    assert "python3 -m venv /opt/venv" in text
    assert re.search(r"^RUN pip install \.(\s|$)", text, re.M), "must install this repo"
    assert re.search(r"^COPY \. \./?$", text, re.M)
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1] not in {"root", "0"}
    assert re.search(r"^HEALTHCHECK .*\n?.*healthcheck\.py", text, re.M)


def test_build_context_keeps_the_package_and_drops_secrets():
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ".env" in ignored
    for needed in ("pyproject.toml", "README.md", "lab_services", "harness"):
        assert needed not in ignored
    assert "!docker/healthcheck.py" in ignored


def test_shell_scripts_parse():
    for script, shell in [(RABBIT_DIR / "start.sh", "sh"),
                          (ROOT / "docker" / "standin" / "docker-entrypoint.sh", "sh"),
                          (ROOT / ".ci" / "container-engine.sh", "bash")]:
        result = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, f"{script}: {result.stderr}"


# --- credentials ---------------------------------------------------------------------------


def test_env_example_carries_the_original_lab_defaults():
    pairs = env_example()
    assert pairs["RABBITMQ_DEFAULT_USER"] == "admin"
    assert pairs["RABBITMQ_DEFAULT_PASS"] == "admin123"
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_no_credentials_are_written_into_committed_container_files():
    password = env_example()["RABBITMQ_DEFAULT_PASS"]
    files = [COMPOSE, DOCKERFILE, RABBIT_DIR / "rabbitmq.conf", RABBIT_DIR / "start.sh",
             *DEFINITIONS.values(), *sorted((ROOT / "docker" / "standin").iterdir())]
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert password not in text, path
        assert not re.search(r"guest:guest|default_pass\s*=|RABBITMQ_DEFAULT_PASS\s*[:=]\s*\w",
                             text), path


# --- conda ---------------------------------------------------------------------------------


def _pyproject_requirements(pyproject: dict) -> dict[str, Requirement]:
    project = pyproject["project"]
    reqs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        reqs.extend(extra)
    return {canonicalize_name(r.name): r for r in map(Requirement, reqs)}


def _conda_requirement(spec: str) -> tuple[str, str]:
    """Name and version part of a conda match spec such as `pandas>=2.1`."""
    name, version = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(.*)", spec.strip()).groups()
    return canonicalize_name(name), version.replace(" ", "")


def test_environment_uses_conda_forge_only_and_python_311(pyproject):
    env = load_yaml(ROOT / "environment.yml")
    assert env["channels"] == ["conda-forge", "nodefaults"]
    assert "python=3.11" in env["dependencies"]
    assert Version("3.11") in SpecifierSet(pyproject["project"]["requires-python"])


def test_environment_python_dependencies_agree_with_pyproject(pyproject):
    env = load_yaml(ROOT / "environment.yml")
    declared = _pyproject_requirements(pyproject)
    extras = set(pyproject["project"].get("optional-dependencies", {}))
    pip_entries: list[str] = []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip_entries.extend(dep["pip"])
            continue
        name, version = _conda_requirement(dep)
        if name in CONDA_NON_PYTHON:
            continue
        assert name in declared, f"conda package {name} is not in pyproject.toml"
        spec = SpecifierSet(version)  # a conda-only form such as `=2.1` fails here, as it should
        assert spec == declared[name].specifier, f"{name}: {spec} vs {declared[name]}"
    assert pip_entries, "the project itself must be installed with pip"
    for entry in pip_entries:
        if editable := re.fullmatch(r"-e \.(?:\[([\w,\-]+)\])?", entry):
            assert set(filter(None, (editable.group(1) or "").split(","))) <= extras
            continue
        req = Requirement(entry)
        name = canonicalize_name(req.name)
        assert name in declared, f"pip package {name} is not in pyproject.toml"
        assert req.specifier == declared[name].specifier, f"{entry} vs {declared[name]}"
    assert any(e.startswith("-e .[") and "lab" in e and "dev" in e for e in pip_entries)


def test_scale_profile_runs_more_inventories_on_the_shared_store(compose):
    replica = compose["services"]["inventory-replica"]
    main = compose["services"]["inventory_service"]
    assert replica["profiles"] == ["scale"]
    assert replica["command"] == main["command"]
    assert str(replica["deploy"]["replicas"]).startswith("${INVENTORY_REPLICAS")
    # Several containers of one service: no fixed name, no host port to fight over.
    assert "container_name" not in replica and "ports" not in replica
    # The same volume and SQLite file as inventory_service: one store for all replicas.
    assert replica["volumes"] == main["volumes"]
    assert replica["environment"]["STORE_PATH"] == main["environment"]["STORE_PATH"]
    assert replica["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
