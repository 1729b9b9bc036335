"""One service process of a lab: started from a command, health-checked, stopped, killed."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from harness.lab.deadline import session as http_session
from harness.waiting import WaitTimeout, wait_until

# A service that has not even opened its port after this long is not coming up: saying so
# now saves the rest of the health time-out (a Python service opens it in 1-3 s).
PORT_GRACE_S = 15.0


def _accepts(port: int) -> bool:
    """True if something accepts a TCP connection on 127.0.0.1:port now."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class ServiceFailed(RuntimeError):
    """A service did not start, crashed or never became healthy; the message has its log."""

    def __init__(self, name: str, what: str, log_tail: str, *, at_start: bool = False,
                 port_opened: bool | None = None) -> None:
        super().__init__(f"{name} {what}\n--- last lines of its log ---\n{log_tail}")
        self.service, self.what, self.log_tail = name, what, log_tail
        # Failed while the lab was starting (not at a restart in the middle of a scenario):
        # every scenario would fail the same way, so a grade stops there.
        self.at_start = at_start
        self.port_opened = port_opened  # None: not known (it exited first)


class ServiceProcess:
    """One process of a service, started from a command, which we can stop, kill, restart."""

    def __init__(self, name: str, port: int, env: dict[str, str], log_path: Path, *,
                 argv: list[str] | None = None, cwd: Path | None = None,
                 health_path: str = "/health", lab_pid_check: bool = True) -> None:
        self.name = name
        self.port = port
        self.env = env
        self.log_path = log_path
        self.argv = argv or [sys.executable, "-m", f"lab_services.{name}"]
        self.cwd = cwd
        self.health_path = health_path
        # The lab's services name their pid in /health; another implementation may not.
        self.lab_pid_check = lab_pid_check
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        # Where the harness reaches it, if not at `port` (a forward out of a namespace).
        self.reach_port: int | None = None
        # False for a service that serves no HTTP at all (a contract gap the lab noted):
        # running is then all that can be known of its health.
        self.http = True
        # How to tell whether the port is open (a netns lab probes inside its namespace).
        self.port_probe: Any = lambda: _accepts(self.port)

    @property
    def url(self) -> str:
        """Base URL of the service's HTTP API."""
        return f"http://127.0.0.1:{self.reach_port or self.port}"

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
            logf.write(f"\n=== start #{self.starts + 1} at {time.strftime('%X')}: "
                       f"{' '.join(self.argv)} ===\n".encode())
            logf.flush()
            try:
                self.proc = subprocess.Popen(
                    self.argv, cwd=self.cwd, env=full_env, stdout=logf,
                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True,  # Ctrl-C in a notebook reaches the lab, not it
                )
            except OSError as exc:  # no such program, not executable, bad cwd
                raise ServiceFailed(self.name, f"could not be started: {exc}",
                                    self.log_tail()) from None
        self.starts += 1

    def _ours(self, body: Any) -> bool:
        # Another lab's service could hold this port for a moment: only ours counts. A pid
        # named in /health must belong to our process's session (a wrapper script's child
        # is fine); without one, a fixed port was checked free before we started.
        pid = body.get("pid") if isinstance(body, dict) else None
        if self.proc is None:
            return False
        if self.lab_pid_check:
            return pid == self.proc.pid
        if isinstance(pid, int) and not isinstance(pid, bool):
            try:
                return pid == self.proc.pid or os.getsid(pid) == self.proc.pid
            except OSError:
                return False
        return True

    def health(self) -> dict[str, Any] | None:
        """The service's health body (a dict), or None if it does not answer 200 (from us)."""
        if not self.http:
            return {"status": "running", "http": False} if self.running else None
        try:
            r = http_session().get(self.url + self.health_path, timeout=2)  # 2 s all told
        except requests.RequestException:
            return None
        if r.status_code != 200:
            return None
        try:
            body = r.json()
        except ValueError:
            body = {"body": r.text[:200]}
        if not isinstance(body, dict):
            body = {"body": body}
        return body if self._ours(body) else None

    def wait_healthy(self, timeout: float = 60.0, port_grace: float = PORT_GRACE_S,
                     give_up: Any = None) -> dict[str, Any]:
        """Block until the health path answers 200; ServiceFailed if it exits, times out, or
        has not opened its port within `port_grace` seconds (no need to wait longer then).

        `give_up()`, asked after `port_grace` seconds, may name a reason to stop waiting
        (say a broker error in a log): the wait then fails at once with it.
        """
        started = time.monotonic()
        opened = [False]

        def healthy():
            if self.proc is not None and self.proc.poll() is not None:
                raise ServiceFailed(self.name, f"exited with code {self.proc.returncode} "
                                    "before it became healthy", self.log_tail(),
                                    port_opened=opened[0])
            body = self.health()
            opened[0] = opened[0] or body is not None or self._port_open()
            if not opened[0] and time.monotonic() - started > min(port_grace, timeout):
                raise ServiceFailed(self.name, f"is running but never opened its port "
                                    f"{self.port} within {port_grace:.0f} s (does it listen "
                                    "on the port the harness gave it?)", self.log_tail(),
                                    port_opened=False)
            if body is None and give_up is not None and \
                    time.monotonic() - started > min(port_grace, timeout):
                reason = give_up()
                if reason:
                    raise ServiceFailed(self.name, f"did not become healthy: {reason}",
                                        self.log_tail(), port_opened=opened[0])
            return body
        try:
            return wait_until(healthy, timeout, f"{self.name} service healthy on {self.url}")
        except WaitTimeout:
            raise ServiceFailed(self.name, f"did not answer 200 on {self.url}{self.health_path}"
                                f" within {timeout:.0f} s (its port was "
                                f"{'open' if opened[0] else 'never open'})", self.log_tail(),
                                port_opened=opened[0]) from None

    def _port_open(self) -> bool:
        try:
            return bool(self.port_probe())
        except OSError:
            return False

    def stop(self, timeout: float = 15.0) -> None:
        """Stop gracefully with SIGTERM to its process group (SIGKILL after the timeout)."""
        if not self.running:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        # A wrapper script may exit before its child: make sure the group is gone.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

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
