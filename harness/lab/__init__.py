"""Run an implementation's three services as real processes against a broker, over HTTP.

The package: `service` (one process: start, health, stop, kill), `client` (the HTTP calls),
`impl` (spec files), and here `Lab` and `LabConfig`.

The lab's own services by default, or any implementation named by a spec file
(harness.lab.impl). Each `Lab` gets its own vhost on the broker (when the management API is
there and the implementation honours vhosts), its own free HTTP ports, its own data dirs and
one log file per process, so several labs and test sessions can run side by side on one
broker.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import logging
import os
import sys
import tempfile
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from harness.brokers.base import Broker
from harness.brokers.netns import GradeNamespace, netns_available
from harness.lab.blame import blame, broker_error
from harness.lab.client import ContractGap, LabClient, MissingPath
from harness.lab.impl import SERVICES, Impl, render, resolve
from harness.lab.service import ServiceFailed, ServiceProcess
from harness.ports import free_ports, port_free, release_ports
from lab_services.contract import DEFAULT_PORTS

__all__ = ["DEFAULT_PORTS", "ContractGap", "Lab", "LabConfig", "MissingPath", "ServiceFailed",
           "ServiceProcess", "with_vhost"]

log = logging.getLogger(__name__)

# Labs still running when Python exits (a notebook kernel shut down mid-run, Ctrl-C, a
# failed test): their services would otherwise retry a vanished broker for ever.
_live_labs: set[Lab] = set()


@atexit.register
def _close_live_labs() -> None:
    for lab in list(_live_labs):
        with contextlib.suppress(Exception):
            lab.close()


# Whether namespaces can be made here does not change while we run: ask once.
_netns_available = functools.cache(netns_available)

# The services whose HTTP black-box grading needs; another may serve none (a gap).
HTTP_NEEDED = ("order", "notification")
# Services seen to serve no HTTP, by (spec path, service): later labs do not wait again.
_NO_HTTP: set[tuple[str, str]] = set()


def with_vhost(amqp_url: str, vhost: str) -> str:
    """The same AMQP URL pointing at another vhost."""
    parts = urlsplit(amqp_url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(vhost, safe=""), parts.query, ""))


@dataclass
class LabConfig:
    """How the lab runs its services; fields fall back to environment variables."""

    idempotency: str = field(default_factory=lambda: os.environ.get("IDEMPOTENCY", "sqlite"))
    prefetch: int = field(default_factory=lambda: int(os.environ.get("PREFETCH", "200")))
    queue_type: str = field(default_factory=lambda: os.environ.get("LAB_QUEUE_TYPE", "classic"))
    initial_stock: str | None = None
    log_level: str = field(default_factory=lambda: os.environ.get("LOG_LEVEL", "INFO"))
    own_vhost: bool = True
    own_network: bool = True  # a namespace for an implementation with fixed addresses
    health_timeout: float = 60.0
    extra_env: dict[str, str] = field(default_factory=dict)


class Lab(LabClient):
    """An implementation's three services running against one broker, as a context manager.

    Args:
        broker: a started broker (harness.brokers).
        config: the lab's own knobs (white-box; they reach only the lab's own services).
        impl: an Impl, a path to an impl.toml, or None for the lab's own services.
        replicas: processes per service, e.g. {"inventory": 3}; replicas share the
            service's data dir, and `services[name]` is the first of them.
        workdir: folder for data dirs and logs (default: a temporary folder).
    """

    def __init__(self, broker: Broker, config: LabConfig | None = None, *,
                 impl: Impl | str | Path | None = None, replicas: dict[str, int] | None = None,
                 workdir: str | Path | None = None, services: Iterable[str] = SERVICES,
                 ports: dict[str, int] | None = None, **overrides: Any) -> None:
        self.broker = broker
        self.config = config or LabConfig(**overrides)
        self.impl = resolve(impl)
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="rabbit-lab-")
        self.workdir = Path(workdir or self._tmp.name).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        # A vhost-blind implementation takes the broker's default vhost, which the lab
        # empties first: give it a broker of its own (harness.grading.grade does).
        self.vhost = (f"lab-{uuid.uuid4().hex[:8]}"
                      if self.impl.honours_vhost and self._can_make_vhost() else None)
        # An implementation with addresses of its own (fixed ports, a broker host or port)
        # runs in a network namespace of its own when one can be made.
        self.netns, self._no_netns = self._namespace()
        self.processes: dict[str, list[ServiceProcess]] = {}
        self.gaps = []  # contract gaps met by the HTTP helpers (LabClient)
        self.started = False
        names = list(services)
        counts = {n: int((replicas or {}).get(n, 1)) for n in names}
        for n, k in counts.items():
            if k < 1:
                raise ValueError(f"replicas of {n} must be at least 1, not {k}")
            if k > 1 and self.impl.services[n].port is not None:
                raise ValueError(f"{n} listens on the fixed port {self.impl.services[n].port}: "
                                 "it cannot run as several replicas")
        self._reserved = free_ports(sum(k for n, k in counts.items()
                                        if self.impl.services[n].port is None))
        picked = iter(self._reserved)
        for name in names:
            spec = self.impl.services[name]
            data_dir = self.workdir / name
            data_dir.mkdir(exist_ok=True)
            procs = []
            for i in range(counts[name]):
                port = spec.port if spec.port is not None else next(picked)
                # A wanted port (e.g. the documented 5001-5003) only if nobody holds it.
                wanted = (ports or {}).get(name) if i == 0 and spec.port is None else None
                if wanted and port_free(wanted):
                    port = wanted
                suffix = f"-{i + 1}" if counts[name] > 1 else ""
                argv, cwd, env = render(spec, self._values(port, data_dir))
                if spec.lab:
                    env.update(self._lab_env())
                elif self.config.initial_stock:  # the one knob the contract offers everyone
                    env.setdefault("INITIAL_STOCK", self.config.initial_stock)
                env.setdefault("PYTHONUNBUFFERED", "1")
                procs.append(ServiceProcess(
                    name, port, env, self.workdir / f"{name}{suffix}.log", argv=argv, cwd=cwd,
                    health_path=spec.health_path, lab_pid_check=spec.lab))
            self.processes[name] = procs

    @property
    def services(self) -> dict[str, ServiceProcess]:
        """The first (or only) process of each service."""
        return {name: procs[0] for name, procs in self.processes.items()}

    def _namespace(self) -> tuple[GradeNamespace | None, str | None]:
        if not self.impl.fixed_addresses or not self.config.own_network:
            return None, None
        ok, why = _netns_available()
        if not ok:
            return None, why
        host = self.impl.broker_host
        return GradeNamespace((host,) if host else ()), None

    @property
    def service_amqp_url(self) -> str:
        """The AMQP URL the services use: the broker's, or, in a namespace, the address the
        implementation expects (its host name and port, forwarded to the broker)."""
        if self.netns is None:
            return self.amqp_url
        parts = urlsplit(self.amqp_url)
        host = self.impl.broker_host or "127.0.0.1"
        auth = parts.netloc.rsplit("@", 1)[0]
        return urlunsplit((parts.scheme, f"{auth}@{host}:{self.ns_broker_port}", parts.path,
                           parts.query, ""))

    @property
    def ns_broker_port(self) -> int:
        """The AMQP port the broker is forwarded to inside the namespace."""
        return self.impl.broker_port or 5672

    def _values(self, port: int, data_dir: Path) -> dict[str, str]:
        parts = urlsplit(self.service_amqp_url)
        return {"amqp_url": self.service_amqp_url,
                "amqp_host": parts.hostname or "127.0.0.1",
                "amqp_port": str(parts.port or 5672), "amqp_user": unquote(parts.username or ""),
                "amqp_password": unquote(parts.password or ""), "vhost": self.vhost or "/",
                "port": str(port), "data_dir": str(data_dir), "python": sys.executable}

    def _lab_env(self) -> dict[str, str]:
        return {
            # Every node's address: the services fail over to a surviving node.
            "AMQP_URLS": (",".join(self.amqp_urls) if self.netns is None
                          else self.service_amqp_url),
            "IDEMPOTENCY": self.config.idempotency,
            "PREFETCH": str(self.config.prefetch),
            "LAB_QUEUE_TYPE": self.config.queue_type,
            "LOG_LEVEL": self.config.log_level,
            "RECONNECT_MAX_DELAY": "2",
            **({"INITIAL_STOCK": self.config.initial_stock}
               if self.config.initial_stock else {}),
            **self.config.extra_env,
        }

    def _all(self, name: str | None = None, replica: int | None = None) -> list[ServiceProcess]:
        if name is None:
            return [p for procs in self.processes.values() for p in procs]
        procs = self.processes[name]
        return procs if replica is None else [procs[replica]]

    # ---- addresses -------------------------------------------------------------------------

    def _in_vhost(self, url: str) -> str:
        return with_vhost(url, self.vhost) if self.vhost else url

    @property
    def amqp_url(self) -> str:
        """The lab's AMQP URL on a broker node that runs now (follows a cluster's failover)."""
        return self._in_vhost(self.broker.amqp_url)

    @property
    def amqp_urls(self) -> list[str]:
        """The lab's AMQP URL on every broker node (one entry for a single node)."""
        return [self._in_vhost(u) for u in self.broker.amqp_urls]

    # ---- lifecycle -------------------------------------------------------------------------

    def _can_make_vhost(self) -> bool:
        return bool(self.config.own_vhost and self.broker.management_url)

    def _prepare_vhost(self) -> None:
        from harness.brokers import management as admin
        if self.vhost:
            admin.create_vhost(self.broker, self.vhost)
        elif not self.impl.honours_vhost and getattr(self.broker, "management_url", None):
            # A fresh default vhost: nothing left over from an earlier run.
            admin.delete_vhost(self.broker, "/")
            admin.create_vhost(self.broker, "/")
        if self.impl.definitions is not None:
            self._load_definitions(admin)

    def _load_definitions(self, admin: Any) -> None:
        # Some submissions declare their topology in a definitions.json the broker loads.
        path = self.impl.definitions
        if not getattr(self.broker, "management_url", None):
            raise ServiceFailed("broker", f"cannot load {path}: this broker has no management "
                                "API", "", at_start=True)
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
            admin._api(self.broker, "POST", "/definitions/" + quote(self.vhost or "/", safe=""),
                       json=body)
        except (OSError, ValueError) as exc:
            raise ServiceFailed("broker", f"did not take {path.name}: {exc}", "",
                                at_start=True) from None

    def _check_addresses(self) -> None:
        """Without a namespace, say clearly when the implementation's addresses cannot be
        had here (a broker host name, a broker port that is not the broker's)."""
        if self.netns is not None or not self.impl.fixed_addresses:
            return
        why = f" (no network namespace: {self._no_netns})" if self._no_netns else ""
        host = self.impl.broker_host
        if host not in (None, "localhost", "127.0.0.1"):
            raise ServiceFailed("broker", f"cannot be reached as {host!r} here{why}: grade as "
                                "root with `ip netns`, or let the implementation read its "
                                "broker host", "", at_start=True)
        port = urlsplit(self.amqp_url).port
        if self.impl.broker_port is not None and self.impl.broker_port != port:
            raise ServiceFailed("broker", f"is on port {port}, and {self.impl.name} connects "
                                f"to port {self.impl.broker_port} only{why}; a broker cannot "
                                f"be given port {self.impl.broker_port} here (127.0.0.1:"
                                f"{self.impl.broker_port} is taken, e.g. by the machine's own "
                                "node): grade as root with `ip netns`", "", at_start=True)

    def _enter_namespace(self) -> None:
        ns = self.netns
        ns.create()

        def broker_address() -> tuple[str, int]:
            parts = urlsplit(self.broker.amqp_url)  # the node that runs now
            return parts.hostname or "127.0.0.1", parts.port or 5672
        ns.forward_in(self.ns_broker_port, broker_address)
        for proc in self._all():
            proc.reach_port = ns.forward_out(proc.port).port
            proc.port_probe = functools.partial(ns.accepts, proc.port)
            proc.argv = [*ns.prefix, *proc.argv]

    def start(self) -> Lab:
        """Create the lab's vhost, start every service and wait until each is healthy.

        Raises ServiceFailed (with the service's log tail) when one does not come up.
        """
        self._check_addresses()
        for proc in self._all():
            if (self.netns is None and self.impl.services[proc.name].port is not None
                    and not port_free(proc.port)):
                raise ServiceFailed(proc.name, f"cannot start: its fixed port {proc.port} is "
                                    "taken by another program (and no network namespace "
                                    f"could be made: {self._no_netns})", "", at_start=True)
        self._prepare_vhost()
        _live_labs.add(self)
        self.started = True
        if self.netns is not None:
            self._enter_namespace()
        try:
            for svc in self._all():
                svc.start()
            for svc in self._all():
                self._wait_started(svc)
        except ServiceFailed as exc:
            raise blame(exc, self._all(), self.impl) from None
        log.info("lab up (%s): %s (vhost %s, logs in %s)", self.impl.name,
                 ", ".join(f"{s.name} {s.url}" for s in self._all()),
                 self.vhost or "/", self.workdir)
        return self

    def _wait_started(self, svc: ServiceProcess) -> None:
        """Wait until a service is healthy. An inventory that never opens its port but
        keeps running serves no HTTP: a contract gap, noted once, not the end of the grade
        (black-box checks need only the order and notification services' HTTP)."""
        key = (str(self.impl.path), svc.name)
        if key in _NO_HTTP:
            svc.http = False
        try:
            svc.wait_healthy(self.config.health_timeout,
                             give_up=lambda: broker_error(self._all()))
        except ServiceFailed as exc:
            if exc.port_opened is not False or not svc.running or svc.name in HTTP_NEEDED \
                    or self.impl.services[svc.name].lab:
                raise
            _NO_HTTP.add(key)
            svc.http = False
        if not svc.http:
            gap = ContractGap(f"HTTP on the {svc.name} service", "not served: its port was "
                              "never open (GET /health, /inventory, /reservations)",
                              ("inventory", "ledger"))
            if gap not in self.gaps:
                self.gaps.append(gap)

    def close(self) -> None:
        """Stop every service and drop the lab's vhost (idempotent)."""
        _live_labs.discard(self)
        for svc in self._all():
            svc.stop()
        if self.netns is not None:
            self.netns.destroy()
        if self.vhost and self.started:
            self.started = False
            from harness.brokers import management as admin
            try:
                admin.delete_vhost(self.broker, self.vhost)
            except Exception as exc:  # the broker may be down at the end of a fault scenario
                log.info("could not delete vhost %s: %s", self.vhost, exc)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        release_ports(self._reserved)

    def __enter__(self) -> Lab:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- faults on services -----------------------------------------------------------------

    def stop(self, name: str, replica: int | None = None) -> None:
        """Stop a service (every replica, or one) gracefully (SIGTERM)."""
        for p in self._all(name, replica):
            p.stop()

    def kill(self, name: str, replica: int | None = None) -> None:
        """Kill a service (every replica, or one) with SIGKILL."""
        for p in self._all(name, replica):
            p.kill()

    def start_service(self, name: str, env: dict[str, str] | None = None, wait: bool = True,
                      replica: int | None = None) -> None:
        """Start a stopped service (optionally with extra environment) and wait for health."""
        procs = self._all(name, replica)
        for p in procs:
            p.start(env)
        if wait:
            for p in procs:
                p.wait_healthy(self.config.health_timeout)

    def restart(self, name: str, env: dict[str, str] | None = None,
                replica: int | None = None) -> None:
        """Stop then start a service, waiting until it is healthy again."""
        self.stop(name, replica)
        self.start_service(name, env, replica=replica)
