"""Shared fixtures: one real RabbitMQ node per test session, a fresh lab (own vhost) per test.

The broker comes from `--broker` or LAB_TEST_BROKER: `local` (default, an isolated node of
the harness's own), `docker` (testcontainers) or an amqp:// URL. Broker tests skip when no
broker can be had, except under CI=true, where that is a broken setup and fails.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.brokers import Broker, BrokerNotFound, find_server_script, open_broker
from harness.lab import Lab

IN_CI = os.environ.get("CI", "").lower() == "true"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--broker", default=os.environ.get("LAB_TEST_BROKER", "local"),
                     help="broker for integration tests: local | docker | auto | amqp://...")
    parser.addoption("--impl", default=None,
                     help="grade an implementation (its impl.toml): tests/test_autograde.py "
                          "runs every black-box check against it as test cases")
    parser.addoption("--impl-size", default="small", choices=("small", "full"),
                     help="with --impl: CI-sized scenarios (default) or their full size")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without --impl there is nothing to autograde: leave those tests out (not skipped)."""
    if config.getoption("--impl"):
        return
    keep = [i for i in items if i.path.name != "test_autograde.py"]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in keep])
        items[:] = keep


def no_broker(reason: str) -> None:
    """Skip the test for want of a broker, or fail under CI=true."""
    if IN_CI:
        pytest.fail(f"{reason}; CI=true needs a real broker")
    pytest.skip(reason)


def require_rabbitmq() -> None:
    """Skip without a rabbitmq-server release script, or fail when CI=true."""
    if find_server_script() is None:
        no_broker("no rabbitmq-server release script (apt-get install rabbitmq-server)")


@pytest.fixture(scope="session")
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    """One started broker for the whole session (closed, with its node, at the end)."""
    kind = request.config.getoption("--broker")
    if kind == "local":
        require_rabbitmq()
    try:
        b = open_broker(kind)
    except BrokerNotFound as exc:
        no_broker(str(exc))
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def make_lab(broker: Broker, tmp_path: Path) -> Iterator[Callable[..., Lab]]:
    """A factory of started labs (own vhost, own stores, own ports), all closed after."""
    labs: list[Lab] = []

    def make(**config: Any) -> Lab:
        lab = Lab(broker, workdir=tmp_path / f"lab{len(labs)}", **config)
        labs.append(lab)
        return lab.start()

    yield make
    for lab in labs:
        lab.close()


@pytest.fixture
def lab(make_lab: Callable[..., Lab]) -> Lab:
    """A started lab with the default configuration."""
    return make_lab()
