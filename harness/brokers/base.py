"""What every broker provider offers: settings, errors, and the `Broker` base class.

Callers ask a broker what it can do instead of probing attributes::

    if broker.can_kill:          # local node, local cluster, container: yes; a URL: no
        broker.kill()
    for node in broker.nodes:    # one per RabbitMQ node the harness runs (empty for URL/docker)
        print(node.name, node.amqp_url, node.running)

`amqp_urls` lists every node's address (a cluster gives three); `amqp_url` is the first one
that runs now, so the harness's own probes follow a failover.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable
from urllib.parse import quote, urlparse

import pika
import pika.exceptions

DEFAULT_IMAGE = "rabbitmq:4.1.4-management"

HOWTO = """\
Get a RabbitMQ broker in any one of these ways:
  1. a local node (what CI uses): `sudo apt-get install rabbitmq-server` (Debian/Ubuntu),
     or `conda install -c conda-forge rabbitmq-server` into the active conda environment,
     or point RABBITMQ_SERVER at a rabbitmq-server release script;
  2. Docker: start a Docker daemon (or any engine with a Docker API, via DOCKER_HOST);
     the image is RABBITMQ_IMAGE (default {image});
  3. an existing broker: pass --broker amqp://USER:PASS@HOST:5672/%2F or set AMQP_URL."""


class BrokerNotFound(RuntimeError):
    """No provider can give us a broker; the message says how to get one."""

    def __init__(self, reason: str) -> None:
        howto = HOWTO.format(image=DEFAULT_IMAGE)
        super().__init__(f"No RabbitMQ broker available: {reason}.\n{howto}")


class BrokerError(RuntimeError):
    """A broker failed to start, stop or answer in time (the message carries its log tail)."""


def env(name: str, default: str | None = None) -> str | None:
    """An environment variable, with empty counting as unset."""
    return os.environ.get(name) or default


@dataclass
class BrokerSettings:
    """Typed broker options; those left unset fall back to environment variables.

    Args:
        url: broker URL for the "url" provider (env AMQP_URL).
        management_url: management API base URL for the "url" provider
            (env RABBITMQ_MANAGEMENT_URL; default http://HOST:15672).
        server_script: rabbitmq-server release script (env RABBITMQ_SERVER; default: searched).
        image: Docker image (env RABBITMQ_IMAGE).
        username: user created on a fresh local node or container.
        password: that user's password.
        node_name: local node name (default lab-<random>@localhost).
        stats_interval_ms: management statistics interval (RabbitMQ's default is 5000).
        start_timeout: seconds to wait for a broker to accept connections.
        stop_timeout: seconds to wait for a graceful stop before killing.
        docker_ping_timeout: seconds to wait for a Docker daemon to answer.
        amqp_port: AMQP port a local node takes if it is free (default: a free port).
        management_port: management port a local node takes if it is free (same).
        cluster_netns: run a local cluster's nodes in network namespaces, so that they can be
            partitioned: "auto" (if root and `ip netns` work), "on" or "off"
            (env LAB_CLUSTER_NETNS).
    """

    url: str | None = field(default_factory=lambda: env("AMQP_URL"))
    management_url: str | None = field(default_factory=lambda: env("RABBITMQ_MANAGEMENT_URL"))
    server_script: str | None = field(default_factory=lambda: env("RABBITMQ_SERVER"))
    image: str = field(default_factory=lambda: env("RABBITMQ_IMAGE", DEFAULT_IMAGE) or "")
    username: str = "guest"
    password: str = "guest"
    node_name: str | None = None
    stats_interval_ms: int = 500
    start_timeout: float = 90.0
    stop_timeout: float = 30.0
    docker_ping_timeout: float = 2.0
    amqp_port: int | None = None
    management_port: int | None = None
    cluster_netns: str = field(default_factory=lambda: env("LAB_CLUSTER_NETNS", "auto") or "")


@runtime_checkable
class Node(Protocol):
    """One RabbitMQ node the harness runs itself, controllable on its own."""

    name: str

    @property
    def amqp_url(self) -> str:
        """The node's AMQP URL (default vhost)."""

    @property
    def running(self) -> bool:
        """True while a process of the node is alive."""

    def stop(self) -> None:
        """Stop the node gracefully."""

    def kill(self) -> None:
        """Kill the node hard (SIGKILL to its process group)."""

    def start(self) -> None:
        """Start the node on its data dir and wait until it takes connections."""

    def restart(self) -> None:
        """Stop (if running) and start the node again."""


# Brokers still to tear down when Python exits (normally, on Ctrl-C, or on SIGTERM).
_live: set[Broker] = set()


@atexit.register
def _close_all() -> None:
    for broker in list(_live):
        if broker._owner_pid == os.getpid():  # a forked child must not close its parent's broker
            with contextlib.suppress(Exception):
                broker.close()


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def install_sigterm_exit() -> None:
    """Make SIGTERM raise SystemExit so atexit cleanup runs, unless someone handles it already."""
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _exit_on_sigterm)


def amqp_url_for(user: str, password: str, host: str, port: int) -> str:
    """An amqp:// URL for the default vhost, with user and password quoted."""
    return f"amqp://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}/%2F"


def safe_url(url: str) -> str:
    """A URL without its password, for messages and logs."""
    p = urlparse(url)
    return url.replace(f":{p.password}@", ":***@") if p.password else url


def short(exc: BaseException, limit: int = 160) -> str:
    """`Type: message`, cut to `limit` characters."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def probe(amqp_url: str) -> None:
    """Open and close one connection; raise if the broker does not accept it."""
    p = urlparse(amqp_url)
    port = p.port or (5671 if p.scheme == "amqps" else 5672)
    # A plain TCP connect first: it is quiet, whereas pika logs every refused attempt.
    with socket.create_connection((p.hostname or "localhost", port), timeout=2):
        pass
    params = pika.URLParameters(amqp_url)
    params.socket_timeout = 5
    params.connection_attempts = 1
    pika.BlockingConnection(params).close()


class Broker:
    """A RabbitMQ broker the harness can start and close, and, by capability, fault.

    Capabilities (class attributes, so callers never need getattr):
        can_stop: `stop()`, `start()` and `restart()` work on it.
        can_kill: `kill()` works on it (a hard crash, no clean shutdown).
    """

    provider: ClassVar[str] = "?"
    can_stop: ClassVar[bool] = True
    can_kill: ClassVar[bool] = True

    def __init__(self, settings: BrokerSettings | None = None) -> None:
        self.settings = settings or BrokerSettings()
        self._amqp_url: str = ""
        self.management_url: str | None = None
        self.management_auth: tuple[str, str] = (self.settings.username, self.settings.password)
        self._lock = threading.RLock()  # fault injection may come from another thread
        self._owner_pid = os.getpid()
        self._started = False
        self._closed = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.provider} {self.amqp_url or '(not started)'}>"

    @property
    def amqp_url(self) -> str:
        """The AMQP URL clients use (for a cluster: a node that runs now)."""
        return self._amqp_url

    @amqp_url.setter
    def amqp_url(self, value: str) -> None:
        self._amqp_url = value

    @property
    def amqp_urls(self) -> list[str]:
        """Every node's AMQP URL, for clients that fail over (one entry for a single node)."""
        return [self.amqp_url]

    @property
    def nodes(self) -> Sequence[Node]:
        """The nodes the harness runs itself and can fault one by one (none by default)."""
        return ()

    def start(self) -> None:
        """Start the broker and block until a pika connection opens."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the broker gracefully and block until it is down."""
        raise NotImplementedError

    def kill(self) -> None:
        """Kill the broker hard (no clean shutdown) and block until it is down."""
        raise NotImplementedError

    def restart(self) -> None:
        """Start the broker again on the same data and ports; block until ready."""
        raise NotImplementedError

    def close(self) -> None:
        """Tear everything down; idempotent and safe to call from atexit."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._teardown()
            finally:
                _live.discard(self)

    def _teardown(self) -> None:
        """Release what the provider holds (hook for providers; runs once, under the lock)."""

    def __enter__(self) -> Broker:
        if not self._started:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_alive(self) -> None:
        """Raise BrokerError if the broker can no longer become ready (hook for providers)."""

    def _diagnostics(self) -> str:
        """Text to append to errors, such as a log tail (hook for providers)."""
        return ""

    def _probe(self) -> None:
        """Open and close one connection; raise if the broker does not accept it."""
        probe(self.amqp_url)

    def wait_ready(self, timeout: float = 60) -> None:
        """Block until a pika connection to amqp_url opens (polling); raise BrokerError if not."""
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            try:
                self._probe()
                return
            except (pika.exceptions.ProbableAuthenticationError,
                    pika.exceptions.ProbableAccessDeniedError) as exc:
                raise BrokerError(f"{self._safe_url()} refused the login: {exc!r}") from exc
            except (OSError, pika.exceptions.AMQPError) as exc:
                last = exc
            if time.monotonic() > deadline:
                raise BrokerError(f"broker at {self._safe_url()} not ready after {timeout:.0f} s "
                                  f"(last error: {last!r}){self._diagnostics()}")
            time.sleep(0.2)

    def version(self) -> str:
        """The broker's version string as it announces it on connect, e.g. "3.10.8"."""
        conn = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        try:
            value = conn._impl.server_properties["version"]
        finally:
            conn.close()
        return value.decode() if isinstance(value, bytes) else str(value)

    def _safe_url(self) -> str:
        """amqp_url without the password, for messages."""
        return safe_url(self.amqp_url)

    def _register(self) -> None:
        install_sigterm_exit()
        _live.add(self)
