"""Find a broker's processes with psutil: by session, by an argument, an epmd by its port.

Why these three ways: a local node runs in its own session (started with
`start_new_session=True`), so its wrapper, beam.smp and helpers share a session id; beam's
command line carries `-home DIR`, and each node has a HOME of its own, so that argument
names the node even when the session is gone; epmd daemonizes out of the session, but it
inherited `ERL_EPMD_PORT` from the node that launched it, and that port is private to us.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable

import psutil

SYSTEM_EPMD_PORT = 4369  # the machine's own epmd: never ours to touch


def _live(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def session_members(sid: int) -> list[int]:
    """Live (not zombie) processes whose session id is `sid`."""
    members = []
    for proc in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):
            if os.getsid(proc.pid) == sid and _live(proc):
                members.append(proc.pid)
    return members


def with_argument(arg: str) -> list[int]:
    """Live processes that have `arg` as one whole command-line argument."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if arg in (proc.info.get("cmdline") or ()) and _live(proc):
            found.append(proc.pid)
    return found


def epmd_for_port(port: int) -> int | None:
    """The pid of the epmd that serves `port` (from its ERL_EPMD_PORT or `-port`), or None.

    Refuses the machine's own port 4369: this harness never looks for, or stops, that epmd.
    """
    if port == SYSTEM_EPMD_PORT:
        raise ValueError("port 4369 is the machine's own epmd; the harness never touches it")
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.info.get("name") != "epmd" or not _live(proc):
            continue
        cmd = proc.info.get("cmdline") or []
        by_arg = any(a == "-port" and i + 1 < len(cmd) and cmd[i + 1] == str(port)
                     for i, a in enumerate(cmd))
        try:
            by_env = proc.environ().get("ERL_EPMD_PORT") == str(port)
        except psutil.Error:
            by_env = False
        if by_arg or by_env:
            return proc.pid
    return None


def alive(pids: Iterable[int]) -> list[int]:
    """Those of `pids` that are still running (zombies count as gone)."""
    out = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            if _live(psutil.Process(pid)):
                out.append(pid)
    return out


def signal_group(pgid: int, sig: int) -> None:
    """Send `sig` to a process group; a group already gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


_STOPPED = (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP, psutil.STATUS_ZOMBIE,
            psutil.STATUS_DEAD)


def group_stopped(pgid: int) -> bool:
    """Whether every thread of every process in a process group has stopped (SIGSTOP)."""
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) != pgid:
                continue
            states = [psutil.Process(t.id).status() for t in proc.threads()]
        except (psutil.Error, OSError):
            continue  # it ended meanwhile
        if any(state not in _STOPPED for state in states):
            return False
    return True


def freeze_group(pgid: int, timeout: float = 10.0) -> None:
    """SIGSTOP a process group and return once every one of its threads has stopped.

    kill() returns once the signal is queued; the kernel wakes one thread to take it and
    the others run on until that thread stops the group. A service "frozen" without this
    wait could still take a delivery and publish with its AMQP thread (seen in 15 of 96
    freezes of the queue-loss test, and a plain thread answered in 166 of 1000 tries).
    """
    os.killpg(pgid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    while not group_stopped(pgid):
        if time.monotonic() > deadline:
            raise TimeoutError(f"process group {pgid} still has running threads "
                               f"{timeout:g} s after SIGSTOP")
        time.sleep(0.01)


def stop_epmd(port: int, pid: int | None = None, timeout: float = 5.0) -> None:
    """Stop the epmd serving our private `port`: SIGTERM, then SIGKILL; never port 4369.

    The pid is looked up again before each signal, so a reused pid is never signalled.
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        current = epmd_for_port(port)
        if current is None or (pid is not None and current != pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(current, sig)
        deadline = time.monotonic() + timeout
        while epmd_for_port(port) == current and time.monotonic() < deadline:
            time.sleep(0.05)


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process in MiB, or None if it is gone."""
    try:
        return round(psutil.Process(pid).memory_info().rss / 2**20, 1)
    except psutil.Error:
        return None
