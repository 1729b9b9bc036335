"""Free TCP ports for brokers and services that must keep their port across restarts."""

from __future__ import annotations

import random
import socket
from pathlib import Path

CTL_DIST_PORTS = range(35672, 35683)  # rabbitmqctl takes its own distribution port here


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


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports, below the ephemeral range and outside rabbitmqctl's ports.

    Below the ephemeral range, because the ports must stay free across restarts and the
    kernel hands out ephemeral ports to every outgoing connection in the meantime.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    candidates = list(range(20000, min(low, 32768)))
    random.shuffle(candidates)
    ports: list[int] = []
    for port in candidates:
        if len(ports) == n:
            break
        if port not in CTL_DIST_PORTS and port not in ports and port_free(port):
            ports.append(port)
    while len(ports) < n:  # no room below the ephemeral range: let the kernel choose
        with socket.socket() as s:
            s.bind(("0.0.0.0", 0))
            port = s.getsockname()[1]
        if port not in CTL_DIST_PORTS and port not in ports:
            ports.append(port)
    return ports
