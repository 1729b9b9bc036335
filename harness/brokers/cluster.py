"""A RabbitMQ cluster of the harness's own local nodes (default 3), on one machine.

Each node has its own name, AMQP/management/distribution ports, data dir and HOME; all of
them share ONE private epmd port and the same Erlang cookie (nodes with different epmd
ports cannot find each other). Nodes 2..N join node 1 with `rabbitmqctl stop_app`, `reset`,
`join_cluster`, `start_app`. Every node can be stopped, killed and restarted on its own::

    with LocalCluster() as cluster:
        name = cluster.leader("order_placed", vhost)     # asks the management API
        victim = cluster.node_named(name)
        victim.kill()                                    # kill -9 of its process group
        victim.start()                                   # rejoins from its data dir

Never touches the machine's own node (5672) or epmd (4369).
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from harness.brokers import procs
from harness.brokers.base import Broker, BrokerError, BrokerSettings
from harness.brokers.local import LocalBroker
from harness.brokers.netns import NetnsNetwork
from harness.ports import free_ports, port_free, release_ports
from harness.waiting import wait_until

log = logging.getLogger(__name__)

MAX_NODES = 7
NET_TICKTIME = 10
# A cut-off node notices in 0.75-1.25 x NET_TICKTIME, then pauses.
PAUSE_TIMEOUT_S = 6 * NET_TICKTIME


# What RabbitMQ 3.10 logs when a booting node syncs its feature flags with a peer that is
# itself still booting (the peer's registry is not loaded yet: badmap undefined). The node
# exits; booted again once its peers are up, it syncs against running nodes and joins.
PEER_RACE_SIGNATURE = "incompatible_feature_flags"


def boot_together(nodes: list[Any], retries: int = 2) -> None:
    """Launch nodes at once, wait for all, and boot again any that lost the peer race."""
    for n in nodes:
        n.launch()

    def wait_for(n: Any) -> None:
        for attempt in range(retries + 1):
            try:
                n.start()  # launched: this waits until it takes connections; else relaunches
                return
            except BrokerError as exc:
                if PEER_RACE_SIGNATURE not in str(exc) or attempt == retries:
                    raise
                log.warning("node %s lost the feature-flag race with a booting peer; "
                            "booting it again (%d of %d)", n.node, attempt + 1, retries)

    # Concurrently: a node waiting for its peers' tables must not hold up a peer's reboot.
    with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
        for future in [pool.submit(wait_for, n) for n in nodes]:
            future.result()


class LocalCluster(Broker):
    """N local RabbitMQ nodes joined into one cluster (quorum queues need 3 to survive one).

    Args:
        settings: broker settings shared by the nodes (credentials, timeouts).
        workdir: folder holding node1..nodeN, kept at close (default: temporary, removed).
        size: number of nodes, 2..7 (default 3).
        netns: run each node in a network namespace of its own (needs root), so that a
            node can be partitioned from the others and healed (`partition`, `heal`).
    """

    provider = "local-cluster"

    def __init__(self, settings: BrokerSettings | None = None,
                 workdir: str | Path | None = None, *, size: int = 3,
                 netns: bool = False) -> None:
        super().__init__(settings)
        if not 2 <= size <= MAX_NODES:
            raise ValueError(f"a local cluster has 2..{MAX_NODES} nodes, not {size}")
        self._own_dir = workdir is None
        self.base_dir = (Path(tempfile.mkdtemp(prefix="rabbit-lab-cluster-")) if workdir is None
                         else Path(workdir).resolve())
        self.base_dir.mkdir(parents=True, exist_ok=True)
        ports = free_ports(3 * size + 1)  # all at once: nodes must not pick the same port
        self.epmd_port = ports[-1]
        cookie = secrets.token_hex(16)
        tag = secrets.token_hex(3)
        self.network = NetnsNetwork(size) if netns else None
        self._partitioned: set[int] = set()
        self._nodes = []
        for i in range(size):
            host = self.network.address(i) if self.network else "127.0.0.1"
            at = host if self.network else "localhost"  # a long name in a namespace
            self._nodes.append(LocalBroker(
                replace(self.settings, node_name=f"clu{i + 1}-{tag}@{at}"),
                self.base_dir / f"node{i + 1}",
                ports=(ports[3 * i], ports[3 * i + 1], ports[3 * i + 2]),
                epmd_port=self.epmd_port, cookie=cookie, standalone=False, host=host,
                command_prefix=self.network.prefix(i) if self.network else None,
                # The minority side of a partition pauses, and resumes once healed.
                extra_conf="cluster_partition_handling = pause_minority\n",
                # Peers notice a cut-off node in 8-12 s instead of 45-75 s (default 60).
                extra_erl_args=f"-kernel net_ticktime {NET_TICKTIME}"))
        self._homes = [str(n.home) for n in self._nodes]  # kept for leftovers() after close
        self._ports = ports

    def __repr__(self) -> str:
        return f"<LocalCluster {[n.node for n in self._nodes]} dir={self.base_dir}>"

    # ---- addresses ---------------------------------------------------------------------

    @property
    def nodes(self) -> tuple[LocalBroker, ...]:
        """The cluster's nodes, in join order (node 1 is the seed)."""
        return tuple(self._nodes)

    def _reachable(self) -> list[LocalBroker]:
        # `launched` is a cheap check (no process scan): this runs on every URL lookup.
        return [n for i, n in enumerate(self._nodes)
                if n.launched and i not in self._partitioned]

    def _first_up(self) -> LocalBroker:
        return next(iter(self._reachable()), self._nodes[0])

    @property
    def amqp_url(self) -> str:
        """The AMQP URL of the first node whose process runs now (node 1 if none does)."""
        return self._first_up().amqp_url

    @amqp_url.setter
    def amqp_url(self, value: str) -> None:
        pass  # the base class sets it in __init__; a cluster's URL follows its live nodes

    @property
    def amqp_urls(self) -> list[str]:
        """Every node's AMQP URL, node 1 first: what the services get as AMQP_URLS."""
        return [n.amqp_url for n in self._nodes]

    @property
    def management_url(self) -> str | None:  # type: ignore[override]
        """The management API of the first node whose process runs now."""
        return self._first_up().management_url

    @management_url.setter
    def management_url(self, value: str | None) -> None:
        pass

    @property
    def running(self) -> bool:
        """True while any node's process is alive."""
        return any(n.running for n in self._nodes)

    def node_named(self, name: str) -> LocalBroker:
        """The node with this Erlang name (as the management API reports it)."""
        for n in self._nodes:
            if n.node == name:
                return n
        raise KeyError(f"{name!r} is not a node of this cluster: {[n.node for n in self._nodes]}")

    # ---- lifecycle ---------------------------------------------------------------------

    def _boot(self, nodes: list[LocalBroker]) -> None:
        """Launch the nodes together (they share the boot work), then wait for each."""
        boot_together(nodes)

    def start(self) -> None:
        """Boot every node, join nodes 2..N to node 1 (first start only), wait until ready."""
        with self._lock:
            if self._closed:
                raise BrokerError("this cluster is closed; open a new one")
            self._register()
            t0 = time.monotonic()
            try:
                if self.network is not None and not self.network.created:
                    self.network.create()
                self._boot([n for n in self._nodes if not n.running])
                if not self._started:
                    for n in self._nodes[1:]:
                        self._join(n, self._nodes[0])
            except BaseException:
                self._kill_all()
                raise
            self._started = True
            log.info("cluster of %d nodes ready in %.1f s: %s", len(self._nodes),
                     time.monotonic() - t0, ", ".join(n.node for n in self._nodes))

    def _join(self, node: LocalBroker, seed: LocalBroker) -> None:
        """The documented recipe: stop_app, reset, join_cluster SEED, start_app."""
        for args in (("stop_app",), ("reset",), ("join_cluster", seed.node), ("start_app",)):
            node.rabbitmqctl(*args, timeout=120)
        node.wait_ready(self.settings.start_timeout)

    def start_node(self, node: LocalBroker) -> None:
        """Start one stopped or killed node; it rejoins the cluster from its data dir."""
        node.start()

    def stop(self) -> None:
        """Stop every node gracefully (in reverse order: node 1 goes last)."""
        with self._lock:
            for n in reversed(self._nodes):
                n.stop()

    def kill(self) -> None:
        """Kill every node hard."""
        with self._lock:
            self._kill_all()

    def _kill_all(self) -> None:
        errors = []
        for n in self._nodes:
            try:
                n.kill()
            except BrokerError as exc:
                errors.append(str(exc))
        if errors:
            raise BrokerError("; ".join(errors))

    def restart(self) -> None:
        """Stop every node, then boot them all together (each waits for its peers)."""
        with self._lock:
            self.stop()
            self._boot(list(self._nodes))

    def _teardown(self) -> None:
        """Kill every node, stop the shared epmd, remove the folder if we created it."""
        try:
            if self._own_dir:
                self._kill_all()  # the data goes away anyway
            else:
                self.stop()
            for n in self._nodes:
                n.close()
        finally:
            for _ in range(len(self._nodes) + 1):  # one epmd per namespace, same port
                if procs.epmd_for_port(self.epmd_port) is None:
                    break
                procs.stop_epmd(self.epmd_port)
            if self.network is not None:
                self.network.destroy()
            if self._own_dir:
                shutil.rmtree(self.base_dir, ignore_errors=True)
            release_ports(self._ports)

    def leftovers(self) -> dict[str, Any]:
        """What is still alive of this cluster (also after close): pids and busy ports."""
        pids = sorted({p for home in self._homes for p in procs.with_argument(home)})
        epmd = procs.epmd_for_port(self.epmd_port)
        return {"node_pids": pids, "epmd_pid": epmd,
                "busy_ports": [p for p in self._ports if not port_free(p)],
                **({"network": self.network.leftovers()} if self.network else {})}

    # ---- partitions (namespaces only) ------------------------------------------------

    @property
    def can_partition(self) -> bool:
        """True when the nodes run in network namespaces, so one can be cut off."""
        return self.network is not None

    def partition(self, node: LocalBroker, *, until_paused: float | None = PAUSE_TIMEOUT_S
                  ) -> None:
        """Cut a running node off from the other nodes and the host; wait until it paused."""
        if self.network is None:
            raise NotImplementedError("partitions need the nodes in network namespaces "
                                      "(LocalCluster(netns=True), as root)")
        i = self._nodes.index(node)
        if until_paused:
            # A node still booting (or resuming after the last heal) also reports its app
            # not running: only a node that ran before the cut can be seen to pause.
            wait_until(lambda: self.app_running(node), until_paused,
                       f"{node.node} running before it is cut off")
        self._partitioned.add(i)
        self.network.partition(i)
        # Healed before the cut-off node itself noticed (its peers may notice seconds
        # earlier), it reconnects as a member of the majority, so pause_minority never
        # pauses it, and Mnesia keeps the partition for good (running_partitioned_network).
        # Waiting for the pause makes every heal one that pause_minority recovers from.
        if until_paused:
            wait_until(lambda: self.paused(node), until_paused,
                       f"{node.node} to notice it is cut off and pause (pause_minority)")

    def paused(self, node: LocalBroker) -> bool:
        """True when the node's VM answers but its RabbitMQ app is not running (paused)."""
        return self.app_running(node) is False

    @staticmethod
    def app_running(node: LocalBroker) -> bool | None:
        """Whether the node's RabbitMQ app has booted and runs (None: its VM does not answer)."""
        # Through the node's own namespace: this works while the node is cut off.
        # is_booted, not is_running: the latter is already true while boot steps still run
        # (why `rabbitmq-diagnostics is_running` asks is_booted too).
        try:
            result = node.rabbitmqctl("eval", "rabbit:is_booted(node()).", check=False,
                                      timeout=20)
        except subprocess.TimeoutExpired:  # a busy VM: no answer this time, ask again
            return None
        answer = result.stdout.strip() if result.returncode == 0 else ""
        return {"true": True, "false": False}.get(answer)

    def heal(self, node: LocalBroker) -> None:
        """Connect a partitioned node again."""
        if self.network is None:
            return
        i = self._nodes.index(node)
        self.network.heal(i)
        self._partitioned.discard(i)

    # ---- asking the cluster ------------------------------------------------------------

    def _api(self, path: str, timeout: float = 5.0) -> Any:
        """GET a management API document from the first node that answers."""
        last: Exception | None = None
        for n in self._reachable():
            try:
                r = requests.get(f"{n.management_url}/api{path}", auth=self.management_auth,
                                 timeout=timeout)
                r.raise_for_status()
                return r.json()
            except requests.RequestException as exc:
                last = exc
        raise BrokerError(f"no node's management API answered {path}: {last!r}")

    def queue_info(self, queue: str, vhost: str = "/", timeout: float = 5.0) -> dict[str, Any]:
        """The management API's view of a queue (type, leader, members, messages)."""
        return self._api(f"/queues/{quote(vhost, safe='')}/{quote(queue, safe='')}", timeout)

    def leader(self, queue: str, vhost: str = "/", timeout: float = 5.0) -> str:
        """The name of the node that leads a quorum queue now."""
        info = self.queue_info(queue, vhost, timeout)
        leader = info.get("leader") or info.get("node")
        if not leader:
            raise BrokerError(f"queue {queue!r} in vhost {vhost!r} reports no leader: {info}")
        return leader

    def members(self, queue: str, vhost: str = "/") -> list[str]:
        """The nodes that hold a replica of a quorum queue."""
        return list(self.queue_info(queue, vhost).get("members") or [])

    def running_nodes(self) -> list[str]:
        """Node names the cluster reports running (/api/nodes, field `running`)."""
        return sorted(n["name"] for n in self._api("/nodes") if n.get("running"))

    def cluster_status(self) -> dict[str, Any]:
        """`rabbitmqctl cluster_status --formatter json`, asked of the first running node."""
        node = self._first_up()
        out = node.rabbitmqctl("cluster_status", "--formatter", "json").stdout
        with contextlib.suppress(ValueError):
            return json.loads(out)
        raise BrokerError(f"cluster_status did not print JSON: {out[:300]}")
