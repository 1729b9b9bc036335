"""Free TCP ports for brokers and services that must keep their port across restarts.

A port is free when nothing listens on it, but that is only true until someone binds it.
Two processes (two pytest workers, a notebook and a grading run) probing at the same
moment can pick the same free port, and the second node to boot then dies with
`eaddrinuse`. So every port handed out is also *reserved*: an exclusive `flock` on a file
named after it in one folder shared by every process on the machine. Other processes skip
reserved ports; the lock goes when it is released or when its process exits, however it
exits (the kernel drops it with the file descriptor).
"""

from __future__ import annotations

import fcntl
import os
import random
import socket
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

CTL_DIST_PORTS = range(35672, 35683)  # rabbitmqctl takes its own distribution port here
RESERVATIONS = Path(tempfile.gettempdir()) / "rabbit-lab-ports"

_held: dict[int, int] = {}  # port -> descriptor holding its lock, in this process
_held_lock = threading.Lock()


def port_free(port: int) -> bool:
    """True if a listener could bind the port on all interfaces right now."""
    with socket.socket() as s:
        # SO_REUSEADDR like the broker's own listeners: TIME_WAIT leftovers do not block it.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _reserve(port: int) -> bool:
    """Take the port's lock for this process; False if another holder has it."""
    with _held_lock:
        if port in _held:
            return False
        try:
            if not RESERVATIONS.is_dir():
                RESERVATIONS.mkdir(exist_ok=True)
                RESERVATIONS.chmod(0o1777)  # like /tmp: every user reserves in it
            # Read-only is enough for flock, and opens a file another user created.
            fd = os.open(RESERVATIONS / str(port), os.O_CREAT | os.O_RDONLY, 0o444)
        except OSError:  # no shared folder to reserve in: the bind probe alone decides
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        _held[port] = fd
        return True


def reserved(port: int) -> bool:
    """True if this process holds the port's reservation."""
    return port in _held


def release_ports(ports: Iterable[int]) -> None:
    """Give back reservations this process holds (others' and unknown ports are ignored)."""
    with _held_lock:
        for port in ports:
            fd = _held.pop(port, None)
            if fd is not None:
                os.close(fd)  # closing the only descriptor drops the flock


def candidate_ports() -> list[int]:
    """Ports below the ephemeral range, in random order, where free_ports looks first."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    candidates = list(range(20000, min(low, 32768)))
    random.shuffle(candidates)
    return candidates


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports, reserved for this process until `release_ports`.

    Below the ephemeral range, because the ports must stay free across restarts and the
    kernel hands out ephemeral ports to every outgoing connection in the meantime; and
    outside rabbitmqctl's ports.
    """
    ports: list[int] = []
    for port in candidate_ports():
        if len(ports) == n:
            break
        # Reserve first, then probe: a port another process has just reserved may not be
        # bound yet, and a bound port may belong to someone who never reserves.
        if port in CTL_DIST_PORTS or not _reserve(port):
            continue
        if port_free(port):
            ports.append(port)
        else:
            release_ports([port])
    while len(ports) < n:  # no room below the ephemeral range: let the kernel choose
        with socket.socket() as s:
            s.bind(("0.0.0.0", 0))
            port = s.getsockname()[1]
        if port not in CTL_DIST_PORTS and port not in ports and _reserve(port):
            ports.append(port)
    return ports
