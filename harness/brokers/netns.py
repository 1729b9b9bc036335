"""Network namespaces: one per cluster node (NetnsNetwork), and one per grade of an
implementation that hard-codes its addresses (GradeNamespace, at the end).

One network namespace per cluster node, joined by veth pairs to a bridge on the host.

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
import ctypes
import functools
import ipaddress
import logging
import os
import random
import secrets
import shutil
import socket
import subprocess
import threading
from typing import Any

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


# ---- one namespace per grade: an implementation's own addresses ---------------------------
#
# An implementation that hard-codes localhost:5672 (or a host name such as `rabbitmq`) and
# fixed HTTP ports runs in a namespace of its own, where those addresses are free and its
# own: the broker is forwarded to 127.0.0.1:5672 inside, the host names resolve to
# 127.0.0.1 there (/etc/netns/<ns>/hosts, which `ip netns exec` mounts over /etc/hosts),
# and each service's HTTP port is forwarded to a free port on the host. Sockets are made
# inside the namespace by a thread that enters it (setns), so no bridge or veth is needed,
# and two grades of fixed-port implementations run side by side.

_CLONE_NEWNET = 0x40000000
_NETNS_DIR = "/var/run/netns"


def in_namespace(ns: str, make: Any) -> Any:
    """Call `make()` in a thread that has entered namespace `ns`; return what it returns
    (a socket made there stays in that namespace)."""
    libc = ctypes.CDLL(None, use_errno=True)
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            with open(f"{_NETNS_DIR}/{ns}") as target:
                if libc.setns(target.fileno(), _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into {ns}: {os.strerror(err)}")
            out["value"] = make()  # the thread ends here: nothing to switch back
        except BaseException as exc:  # handed to the caller's thread
            out["error"] = exc

    t = threading.Thread(target=run, name=f"netns-{ns}", daemon=True)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


class Forward:
    """A TCP forward: a listener (made by `listen`) whose connections are joined to new
    connections made by `connect` (each of which may target somewhere else: a broker node
    that moved)."""

    def __init__(self, listener: socket.socket, connect: Any, name: str) -> None:
        self.listener, self.connect, self.name = listener, connect, name
        self.port = listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, name=f"forward-{name}",
                                        daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._join, args=(client,), daemon=True).start()

    def _join(self, client: socket.socket) -> None:
        try:
            upstream = self.connect()
        except OSError:
            client.close()  # nothing there now: the caller sees a refused/closed connection
            return
        with self._lock:
            self._open.update((client, upstream))
        pumps = [threading.Thread(target=_pump, args=pair, daemon=True)
                 for pair in ((client, upstream), (upstream, client))]
        for p in pumps:
            p.start()
        for p in pumps:
            p.join()
        with self._lock:
            self._open.difference_update((client, upstream))
        client.close()
        upstream.close()

    def drop_connections(self) -> None:
        """Cut every connection through this forward (as a broker restart would)."""
        with self._lock:
            for s in list(self._open):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Stop listening and cut every connection."""
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.drop_connections()


CONNECT_TIMEOUT_S = 5.0


def connect_to(target: Any) -> socket.socket:
    """A blocking connection to `target()` = (host, port), given CONNECT_TIMEOUT_S to open."""
    upstream = socket.create_connection(target(), timeout=CONNECT_TIMEOUT_S)
    # The timeout is for connecting only: left on the socket, it cut a consumer's connection
    # after that long without a message (heartbeats come every 60 s), through the pump's recv.
    upstream.settimeout(None)
    return upstream


def _listener(host: str, port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(128)
    return s


class GradeNamespace:
    """A network namespace for one grade: loopback up, host names resolving to 127.0.0.1,
    forwards in (the broker on a port of the implementation's choice) and out (its HTTP)."""

    def __init__(self, hostnames: tuple[str, ...] = ()) -> None:
        self.name = f"rabbitlab-g{secrets.token_hex(4)}"
        self.hostnames = tuple(h for h in hostnames if h not in ("localhost", "127.0.0.1"))
        self.forwards: list[Forward] = []
        self.created = False

    @property
    def prefix(self) -> list[str]:
        """The command prefix that runs a program inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    @property
    def etc(self) -> str:
        """The folder whose files `ip netns exec` mounts over /etc for this namespace."""
        return f"/etc/netns/{self.name}"

    def create(self) -> GradeNamespace:
        """Make the namespace, bring its loopback up and write its hosts file."""
        self.created = True
        try:
            _ip("netns", "add", self.name)
            _ip("-n", self.name, "link", "set", "lo", "up")
            os.makedirs(self.etc, exist_ok=True)
            names = " ".join(("localhost", *self.hostnames))
            with open(f"{self.etc}/hosts", "w") as f:
                f.write(f"127.0.0.1 {names}\n::1 localhost ip6-localhost\n")
        except BaseException:
            self.destroy()
            raise
        log.info("grade namespace %s (host names %s)", self.name, self.hostnames or "-")
        return self

    def forward_in(self, port: int, target: Any) -> Forward:
        """Listen on 127.0.0.1:port inside; join each connection to `target()` = (host,
        port) on the host, read afresh for each connection."""
        listener = in_namespace(self.name, lambda: _listener("127.0.0.1", port))
        fwd = Forward(listener, functools.partial(connect_to, target),
                      f"{self.name}-in-{port}")
        self.forwards.append(fwd)
        return fwd

    def connect_inside(self, port: int, timeout: float = 5) -> socket.socket:
        """A TCP connection to 127.0.0.1:port inside the namespace."""
        def make() -> socket.socket:
            s = socket.socket()
            s.settimeout(timeout)
            s.connect(("127.0.0.1", port))
            s.settimeout(None)
            return s
        return in_namespace(self.name, make)

    def accepts(self, port: int) -> bool:
        """True if something inside listens on 127.0.0.1:port."""
        try:
            self.connect_inside(port, timeout=0.5).close()
            return True
        except OSError:
            return False

    def forward_out(self, port: int) -> Forward:
        """Listen on a free port on the host's 127.0.0.1; join each connection to
        127.0.0.1:port inside the namespace. Its `.port` is where the harness reaches it."""
        fwd = Forward(_listener("127.0.0.1", 0), lambda: self.connect_inside(port),
                      f"{self.name}-out-{port}")
        self.forwards.append(fwd)
        return fwd

    def destroy(self) -> None:
        """Close the forwards, delete the namespace and its /etc folder; idempotent."""
        for fwd in self.forwards:
            fwd.close()
        self.forwards.clear()
        if self.created:
            _ip("netns", "del", self.name, check=False)
            shutil.rmtree(self.etc, ignore_errors=True)
            self.created = False
