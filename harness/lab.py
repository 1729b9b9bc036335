"""Run the three services as real processes against a broker, and reach them over HTTP.

Each `Lab` gets its own vhost on the broker (when the management API is there), its own
free HTTP ports, its own store files and one log file per service, so several labs and test
sessions can run side by side on one broker.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import requests

from harness.ports import free_ports
from harness.waiting import wait_until

log = logging.getLogger(__name__)

SERVICES = ("order", "inventory", "notification")

# Labs still running when Python exits (a notebook kernel shut down mid-run, Ctrl-C, a
# failed test): their services would otherwise retry a vanished broker for ever.
_live_labs: set[Lab] = set()


@atexit.register
def _close_live_labs() -> None:
    for lab in list(_live_labs):
        with contextlib.suppress(Exception):
            lab.close()
DEFAULT_PORTS = {"order": 5001, "inventory": 5002, "notification": 5003}


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
    health_timeout: float = 60.0
    extra_env: dict[str, str] = field(default_factory=dict)


class ServiceProcess:
    """One service running as `python -m lab_services.NAME`, which we can stop, kill, restart."""

    def __init__(self, name: str, port: int, env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.port = port
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        """Base URL of the service's HTTP API."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def exit_code(self) -> int | None:
        """The exit code once the process has ended."""
        return None if self.proc is None else self.proc.poll()

    def start(self, env: dict[str, str] | None = None) -> None:
        """Start the process (with optional environment overrides for this run)."""
        if self.running:
            return
        full_env = {**os.environ, **self.env, **(env or {})}
        with open(self.log_path, "ab") as logf:
            logf.write(f"\n=== start #{self.starts + 1} at {time.strftime('%X')} ===\n".encode())
            logf.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", f"lab_services.{self.name}"],
                env=full_env, stdout=logf, stderr=subprocess.STDOUT,
                start_new_session=True,  # so Ctrl-C in a notebook reaches the lab, not the service
            )
        self.starts += 1

    def health(self) -> dict[str, Any] | None:
        """The service's /health body, or None if it does not answer 200 (from this process)."""
        try:
            r = requests.get(self.url + "/health", timeout=2)
        except requests.RequestException:
            return None
        if r.status_code != 200:
            return None
        body = r.json()
        # Another lab's service could hold this port for a moment: only ours counts.
        return body if self.proc is not None and body.get("pid") == self.proc.pid else None

    def wait_healthy(self, timeout: float = 60.0) -> dict[str, Any]:
        """Block until /health answers 200 (connected to the broker)."""
        def healthy():
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n"
                                   + self.log_tail())
            return self.health()
        return wait_until(healthy, timeout, f"{self.name} service healthy on {self.url}",
                          detail=self.log_tail)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop gracefully with SIGTERM (escalate to SIGKILL after the timeout)."""
        if not self.running:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """Kill at once with SIGKILL, as a crash would."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def wait_exit(self, timeout: float) -> int:
        """Wait for the process to end by itself (e.g. at a crash point); return its code."""
        return wait_until(lambda: self.exit_code is not None and (self.exit_code,),
                          timeout, f"{self.name} to exit")[0]

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the service's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Lab:
    """The three services running against one broker, as a context manager."""

    def __init__(self, broker: Any, config: LabConfig | None = None, *,
                 workdir: str | Path | None = None, services: Iterable[str] = SERVICES,
                 **overrides: Any) -> None:
        self.broker = broker
        self.config = config or LabConfig(**overrides)
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="rabbit-lab-")
        self.workdir = Path(workdir or self._tmp.name)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.vhost = f"lab-{uuid.uuid4().hex[:8]}" if self._can_make_vhost() else None
        self.amqp_url = with_vhost(broker.amqp_url, self.vhost) if self.vhost else broker.amqp_url
        self.services: dict[str, ServiceProcess] = {}
        self.started = False
        names = list(services)
        for name, port in zip(names, free_ports(len(names)), strict=True):
            env = {
                "AMQP_URL": self.amqp_url,
                "PORT": str(port),
                "STORE_PATH": str(self.workdir / f"{name}.sqlite"),
                "IDEMPOTENCY": self.config.idempotency,
                "PREFETCH": str(self.config.prefetch),
                "LAB_QUEUE_TYPE": self.config.queue_type,
                "LOG_LEVEL": self.config.log_level,
                "HOST": "127.0.0.1",
                "PYTHONUNBUFFERED": "1",
                "RECONNECT_MAX_DELAY": "2",
                **({"INITIAL_STOCK": self.config.initial_stock}
                   if self.config.initial_stock else {}),
                **self.config.extra_env,
            }
            self.services[name] = ServiceProcess(name, int(env["PORT"]), env,
                                                 self.workdir / f"{name}.log")

    # ---- lifecycle -------------------------------------------------------------------------

    def _can_make_vhost(self) -> bool:
        return bool(self.config.own_vhost and getattr(self.broker, "management_url", None))

    def start(self) -> Lab:
        """Create the lab's vhost, start every service and wait until each is healthy."""
        if self.vhost:
            from harness import admin
            admin.create_vhost(self.broker, self.vhost)
        _live_labs.add(self)
        self.started = True
        for svc in self.services.values():
            svc.start()
        for svc in self.services.values():
            svc.wait_healthy(self.config.health_timeout)
        log.info("lab up: %s (vhost %s, logs in %s)",
                 ", ".join(f"{n} {s.url}" for n, s in self.services.items()),
                 self.vhost or "/", self.workdir)
        return self

    def close(self) -> None:
        """Stop every service and drop the lab's vhost (idempotent)."""
        _live_labs.discard(self)
        for svc in self.services.values():
            svc.stop()
        if self.vhost and self.started:
            self.started = False
            from harness import admin
            try:
                admin.delete_vhost(self.broker, self.vhost)
            except Exception as exc:  # the broker may be down at the end of a fault scenario
                log.info("could not delete vhost %s: %s", self.vhost, exc)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Lab:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- faults on services -----------------------------------------------------------------

    def stop(self, name: str) -> None:
        """Stop a service gracefully (SIGTERM)."""
        self.services[name].stop()

    def kill(self, name: str) -> None:
        """Kill a service with SIGKILL."""
        self.services[name].kill()

    def start_service(self, name: str, env: dict[str, str] | None = None, wait: bool = True):
        """Start a stopped service (optionally with extra environment) and wait for health."""
        svc = self.services[name]
        svc.start(env)
        if wait:
            svc.wait_healthy(self.config.health_timeout)

    def restart(self, name: str, env: dict[str, str] | None = None) -> None:
        """Stop then start a service, waiting until it is healthy again."""
        self.stop(name)
        self.start_service(name, env)

    # ---- HTTP helpers -----------------------------------------------------------------------

    def url(self, name: str) -> str:
        """Base URL of a service."""
        return self.services[name].url

    def get(self, name: str, path: str, **kwargs: Any) -> Any:
        """GET a JSON document from a service."""
        r = requests.get(self.url(name) + path, timeout=kwargs.pop("timeout", 10), **kwargs)
        r.raise_for_status()
        return r.json()

    def place_order(self, user_id: str, items: list[dict[str, Any]],
                    session: requests.Session | None = None) -> requests.Response:
        """POST one order; return the raw response (201, 4xx or 503)."""
        http = session or requests
        return http.post(self.url("order") + "/order", json={"user_id": user_id, "items": items},
                         timeout=15)

    def inventory(self) -> dict[str, Any]:
        """The inventory's stock."""
        return self.get("inventory", "/inventory")

    def notifications(self) -> list[dict[str, Any]]:
        """Every notification, oldest first."""
        return self.get("notification", "/notifications")

    def orders(self) -> list[dict[str, Any]]:
        """Every order the order service accepted."""
        return self.get("order", "/orders")

    def reservations(self) -> dict[str, Any]:
        """The inventory's reservation ledger and stored outcomes."""
        return self.get("inventory", "/reservations")

    def wait_notified(self, order_ids: Iterable[str], timeout: float = 60.0) -> list[dict]:
        """Wait (bounded) until every given order has a notification; return them all."""
        wanted = set(order_ids)

        def done():
            notes = self.notifications()
            return notes if wanted <= {n["order_id"] for n in notes} else None

        def missing() -> str:
            seen = {n["order_id"] for n in self.notifications()}
            return f"missing: {sorted(wanted - seen)[:10]}"

        return wait_until(done, timeout, f"{len(wanted)} orders notified", detail=missing)
