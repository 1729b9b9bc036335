"""One network namespace per cluster node, joined by veth pairs to a bridge on the host.

Then a node can be partitioned from everyone (its host-side veth goes down) and healed,
not only killed. Needs root and a kernel with network namespaces (`ip netns add`); every
name carries a random tag, so nothing clashes with namespaces or links someone else made,
and teardown removes exactly what was created here.

    host: bridge rlb<tag> 10.213.K.254/24
      |-- veth rlv<tag>1 <-> eth0 in namespace rabbitlab-<tag>-1 (10.213.K.1)
      |-- veth rlv<tag>2 <-> eth0 in namespace rabbitlab-<tag>-2 (10.213.K.2) ...
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import random
import secrets
import shutil
import subprocess

log = logging.getLogger(__name__)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if check and result.returncode != 0:
        raise OSError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def netns_available() -> tuple[bool, str]:
    """Whether this process can create network namespaces here, and why not."""
    if os.geteuid() != 0:
        return False, "network namespaces need root"
    if shutil.which("ip") is None:
        return False, "no `ip` command (iproute2)"
    probe = f"rabbitlab-probe-{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", probe)
    except OSError as exc:
        return False, str(exc)
    _ip("netns", "del", probe, check=False)
    return True, "ip netns add works"


def _free_subnet() -> ipaddress.IPv4Network:
    """A 10.213.K.0/24 that no address on the host falls in."""
    used = _ip("-4", "-o", "addr").stdout
    for k in random.sample(range(1, 255), 254):
        net = ipaddress.IPv4Network(f"10.213.{k}.0/24")
        if f"10.213.{k}." not in used:
            return net
    raise OSError("no free 10.213.K.0/24 subnet")


class NetnsNetwork:
    """A bridge plus one namespace per node; `partition(i)` and `heal(i)` cut and restore."""

    def __init__(self, size: int) -> None:
        self.tag = secrets.token_hex(3)  # 6 hex: link names stay under 15 characters
        self.size = size
        self.bridge = f"rlb{self.tag}"
        self.subnet = _free_subnet()
        self.created = False

    def namespace(self, i: int) -> str:
        """The namespace of node i (0-based)."""
        return f"rabbitlab-{self.tag}-{i + 1}"

    def veth(self, i: int) -> str:
        """The host side of node i's veth pair (what a partition takes down)."""
        return f"rlv{self.tag}{i + 1}"

    def address(self, i: int) -> str:
        """Node i's IPv4 address inside its namespace."""
        return str(self.subnet.network_address + i + 1)

    @property
    def host_address(self) -> str:
        """The bridge's address on the host: how the harness and the services reach nodes."""
        return str(self.subnet.network_address + 254)

    def prefix(self, i: int) -> list[str]:
        """The command prefix that runs a program inside node i's namespace."""
        return ["ip", "netns", "exec", self.namespace(i)]

    def create(self) -> None:
        """Create the bridge, the namespaces and the veth pairs (undone on failure)."""
        self.created = True
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.host_address}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for i in range(self.size):
                ns = self.namespace(i)
                _ip("netns", "add", ns)
                _ip("link", "add", self.veth(i), "type", "veth", "peer", "name", "eth0",
                    "netns", ns)
                _ip("link", "set", self.veth(i), "master", self.bridge, "up")
                _ip("-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
                _ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.destroy()
            raise
        log.info("network namespaces %s..%s on bridge %s (%s)", self.namespace(0),
                 self.namespace(self.size - 1), self.bridge, self.subnet)

    def partition(self, i: int) -> None:
        """Cut node i off from every other node and from the host (its veth goes down)."""
        _ip("link", "set", self.veth(i), "down")

    def heal(self, i: int) -> None:
        """Connect node i again."""
        _ip("link", "set", self.veth(i), "up")

    def is_partitioned(self, i: int) -> bool:
        """True while node i's host-side veth is down."""
        out = _ip("-o", "link", "show", self.veth(i), check=False).stdout
        return "state UP" not in out and ",UP" not in out.split(">")[0]

    def destroy(self) -> None:
        """Delete the namespaces (their veths go with them) and the bridge; idempotent."""
        if not self.created:
            return
        for i in range(self.size):
            _ip("netns", "del", self.namespace(i), check=False)
            _ip("link", "del", self.veth(i), check=False)
        with contextlib.suppress(OSError):
            _ip("link", "del", self.bridge, check=False)
        self.created = False

    def leftovers(self) -> list[str]:
        """Namespaces and links of this network that still exist."""
        names = set(_ip("netns", "list", check=False).stdout.split())
        left = [self.namespace(i) for i in range(self.size) if self.namespace(i) in names]
        links = _ip("-o", "link", check=False).stdout
        left += [n for n in (self.bridge, *(self.veth(i) for i in range(self.size)))
                 if f" {n}:" in links or f" {n}@" in links]
        return left
