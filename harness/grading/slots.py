"""One grade in a slot of its own: a child process with a time limit, a file-size limit and a
memory gauge, and everything it started killed when it ends or overruns.

A student's code can hang, crash, fork a runaway process (even one that leaves its process
group with setsid) or write a file without end. Each slot's processes carry a marker in their
environment, inherited by everything they start; when the slot ends, its process group, its
process tree and every process still carrying its marker are killed, so only that slot pays.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil

MARKER = "RABBIT_LAB_GRADE_SLOT"


@dataclass
class SlotResult:
    """How a slot ended: its exit code (None when killed at the limit), its wall time, its
    peak memory (the whole tree: grader, services, broker) and the processes killed after."""

    returncode: int | None
    timed_out: bool
    seconds: float
    peak_rss_mb: float
    started: float  # wall clock (time.time()), to show that slots overlapped
    ended: float
    leftovers_killed: int


def _marked(marker: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter():
        try:
            if p.environ().get(MARKER) == marker:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _rss_mb(procs: list[psutil.Process]) -> float:
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return total / 2**20


def kill_slot(pid: int, marker: str) -> int:
    """Kill the slot's process group, its tree and every process carrying its marker; return
    how many processes besides the slot's own were still there."""
    targets = {p.pid: p for p in (*_tree(pid), *_marked(marker))}
    others = len(set(targets) - {pid})
    with _quiet():
        os.killpg(pid, signal.SIGKILL)
    for p in targets.values():
        with _quiet():
            p.kill()
    psutil.wait_procs(list(targets.values()), timeout=10)
    return others


class _quiet:
    """Ignore a process that is already gone (or not ours to signal)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, tb) -> bool:
        return kind is not None and issubclass(kind, ProcessLookupError | PermissionError |
                                               psutil.Error)


def run_slot(command: list[str], *, log: Path, timeout: float, cwd: Path | None = None,
             env: dict[str, str] | None = None, max_file_mb: int = 2048,
             poll_s: float = 0.5) -> SlotResult:
    """Run `command` in a slot of its own, its output to `log`, killed after `timeout` s."""
    marker = uuid.uuid4().hex
    environ = {**(env if env is not None else os.environ), MARKER: marker}
    log.parent.mkdir(parents=True, exist_ok=True)
    started, t0 = time.time(), time.monotonic()
    peak = 0.0
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                                env=environ, start_new_session=True, stdin=subprocess.DEVNULL)
        limit = max_file_mb * 2**20  # a file past this raises EFBIG in the writer, not the disk
        with _quiet():
            psutil.Process(proc.pid).rlimit(psutil.RLIMIT_FSIZE, (limit, limit))
        timed_out = False
        while True:
            try:
                proc.wait(timeout=poll_s)
                break
            except subprocess.TimeoutExpired:
                peak = max(peak, _rss_mb(_tree(proc.pid)))
                if time.monotonic() - t0 > timeout:
                    timed_out = True
                    break
        leftovers = kill_slot(proc.pid, marker)
        proc.wait()
    return SlotResult(None if timed_out else proc.returncode, timed_out,
                      time.monotonic() - t0, round(peak, 1), started, time.time(), leftovers)
