"""A local 3-node RabbitMQ cluster: it forms, a quorum queue survives kill -9 of its leader,
a killed node rejoins, a partitioned node is cut off and heals (namespaces), and closing
leaves nothing behind (real nodes, no mocks).

Two clusters serve the module, one in network namespaces (skipped without root) and one on
loopback (booting and joining three nodes takes 30-60 s here); the last test of each
closes it and looks for leftovers. Never touches the machine's node or epmd.
"""

from __future__ import annotations

import socket
import uuid

import pika
import pika.exceptions
import pytest
from conftest import require_rabbitmq

from harness.amqp import depth
from harness.brokers import LocalCluster, open_broker, parse_kind
from harness.brokers.netns import netns_available
from harness.cli import build_parser
from harness.waiting import wait_until

pytestmark = [pytest.mark.broker, pytest.mark.slow]

MESSAGES = 200


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def machine_ports():
    """Whether the machine's own epmd (4369) and node (5672) listen before the cluster."""
    return {p: _listening(p) for p in (4369, 5672)}


@pytest.fixture(scope="module", params=["netns", "loopback"])
def cluster(request, machine_ports):
    """A started 3-node cluster per variant (closed at the end, or by the last test)."""
    require_rabbitmq()
    if request.param == "netns":
        ok, why = netns_available()
        if not ok:
            pytest.skip(f"no network namespaces here: {why}")
    c = open_broker("local-cluster", cluster_netns="on" if request.param == "netns" else "off")
    yield c
    c.close()


def _declare_quorum(url: str, queue: str) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        conn.channel().queue_declare(queue, durable=True, arguments={
            "x-queue-type": "quorum", "x-delivery-limit": 3})
    finally:
        conn.close()


def _publish_confirmed(url: str, queue: str, n: int) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        ch.confirm_delivery()  # BlockingChannel raises if any publish is not confirmed
        for i in range(n):
            ch.basic_publish("", queue, f"m{i}".encode(),
                             pika.BasicProperties(delivery_mode=2), mandatory=True)
    finally:
        conn.close()


def _depth_or_none(url: str, queue: str) -> int | None:
    try:
        return depth(url, queue)
    except (pika.exceptions.AMQPError, OSError):
        return None  # the node is down, or the queue has no leader yet


def _running_or_none(cluster: LocalCluster) -> list[str] | None:
    try:
        return cluster.running_nodes()
    except Exception:  # a node's API is still booting, or blocks on a lost peer
        return None


def test_parse_kind():
    assert parse_kind("local-cluster") == ("local-cluster", 3)
    assert parse_kind("local:5") == ("local-cluster", 5)
    assert parse_kind("local:1") == ("local", 1)
    assert parse_kind("amqp://u:p@h:5672/%2F") == ("url", 1)
    for bad in ("local:0", "local:99", "cluster", "local:x", "local:3;rm"):
        with pytest.raises(ValueError):
            parse_kind(bad)
        with pytest.raises(SystemExit):  # the CLI refuses it before starting anything
            build_parser().parse_args(["run", "baseline", "--broker", bad])
    assert build_parser().parse_args(["up", "--broker", "local:3"]).broker == "local:3"


def test_cluster_forms_with_three_running_nodes(cluster: LocalCluster):
    names = sorted(n.name for n in cluster.nodes)
    assert len(set(names)) == 3
    assert cluster.running_nodes() == names  # /api/nodes
    status = cluster.cluster_status()  # rabbitmqctl cluster_status
    assert sorted(status["running_nodes"]) == names
    assert len(set(cluster.amqp_urls)) == 3
    # Private ports only: never the machine's epmd or node.
    assert cluster.epmd_port != 4369
    assert all(n.amqp_port != 5672 and n.epmd_port == cluster.epmd_port for n in cluster.nodes)
    assert cluster.can_stop and cluster.can_kill
    # Asked of each node itself (in its namespace, if any): booted and running.
    assert [cluster.app_running(n) for n in cluster.nodes] == [True, True, True]


def test_quorum_queue_survives_kill_of_its_leader_and_the_node_rejoins(cluster: LocalCluster):
    queue = f"qq-{uuid.uuid4().hex[:8]}"
    _declare_quorum(cluster.amqp_url, queue)
    wait_until(lambda: len(cluster.members(queue)) == 3, 30, "three replicas")
    _publish_confirmed(cluster.amqp_url, queue, MESSAGES)
    old = cluster.leader(queue)
    victim = cluster.node_named(old)
    survivors = [n for n in cluster.nodes if n is not victim]

    victim.kill()  # kill -9 of its process group
    assert not victim.running

    def new_leader() -> str | None:
        try:
            leader = cluster.leader(queue)
        except Exception:  # the API node may be the one just killed, or mid-election
            return None
        return leader if leader != old else None

    leader = wait_until(new_leader, 60, "another node to lead the queue")
    assert leader in {n.name for n in survivors}
    for node in survivors:  # every surviving node serves all confirmed messages
        wait_until(lambda n=node: _depth_or_none(n.amqp_url, queue) == MESSAGES, 60,
                   f"{MESSAGES} messages seen from {node.name}")

    cluster.start_node(victim)  # rejoins from its data dir
    names = sorted(n.name for n in cluster.nodes)
    wait_until(lambda: _running_or_none(cluster) == names, 60, "the killed node running again")
    wait_until(lambda: _depth_or_none(victim.amqp_url, queue) == MESSAGES, 60,
               "the restarted node serves the queue")
    assert set(cluster.members(queue)) == set(names)


def test_one_node_stops_gracefully_and_restarts(cluster: LocalCluster):
    node = cluster.nodes[2]
    node.stop()
    others = sorted(n.name for n in cluster.nodes if n is not node)
    wait_until(lambda: _running_or_none(cluster) == others, 30, "two running nodes")
    node.restart()
    wait_until(lambda: len(_running_or_none(cluster) or ()) == 3, 60, "three running nodes again")


def test_partitioned_node_is_cut_off_and_heals(cluster: LocalCluster):
    if not cluster.can_partition:
        pytest.skip("partitions need the nodes in network namespaces")
    queue = f"qq-{uuid.uuid4().hex[:8]}"
    _declare_quorum(cluster.amqp_url, queue)
    wait_until(lambda: len(cluster.members(queue)) == 3, 30, "three replicas")
    node = cluster.nodes[2]
    names = sorted(n.name for n in cluster.nodes)
    cluster.partition(node)  # returns once the node itself noticed and paused
    assert cluster.paused(node)
    majority = sorted(n.name for n in cluster.nodes if n is not node)

    wait_until(lambda: _running_or_none(cluster) == majority, 60, "the majority to drop the node")
    # The majority still takes confirmed messages into the quorum queue.
    _publish_confirmed(cluster.amqp_url, queue, MESSAGES)
    assert cluster.amqp_url != node.amqp_url  # the harness follows reachable nodes
    cluster.heal(node)

    def why() -> str:
        status = node.rabbitmqctl("cluster_status", check=False)
        return f"{status.stdout[-1500:]}\n--- {node.log_path} ---\n" + \
            node.log_path.read_text(errors="replace")[-3000:]

    wait_until(lambda: _running_or_none(cluster) == names, 90, "the healed node running again",
               detail=why)
    wait_until(lambda: _depth_or_none(node.amqp_url, queue) == MESSAGES, 60,
               "the healed node serves every message published while it was cut off")


def test_whole_cluster_stopped_and_restarted_keeps_a_quorum_queue(cluster: LocalCluster):
    # What `reconnect --how stop` does to a cluster: every node, then all back together.
    # (A kill -9 of all three right after the cluster formed came back with 0 of 200
    # confirmed messages, 3 times of 3; see docs/scale-out.md. Not asserted here.)
    queue = f"qq-{uuid.uuid4().hex[:8]}"
    _declare_quorum(cluster.amqp_url, queue)
    wait_until(lambda: len(cluster.members(queue)) == 3, 30, "three replicas")
    _publish_confirmed(cluster.amqp_url, queue, MESSAGES)
    cluster.stop()
    assert not cluster.running
    cluster.restart()
    names = sorted(n.name for n in cluster.nodes)
    wait_until(lambda: _running_or_none(cluster) == names, 90, "three running nodes again")
    wait_until(lambda: _depth_or_none(cluster.amqp_url, queue) == MESSAGES, 60,
               "every confirmed message after the restart")


def test_close_leaves_nothing_behind(cluster: LocalCluster, machine_ports):
    homes = [str(n.home) for n in cluster.nodes]
    assert cluster.leftovers()["node_pids"]  # sanity: the probe finds the running nodes
    cluster.close()
    left = cluster.leftovers()
    expected = {"node_pids": [], "epmd_pid": None, "busy_ports": []}
    if cluster.network is not None:
        expected["network"] = []  # no namespace, veth or bridge left
    assert left == expected, (left, homes)
    assert not cluster.base_dir.exists()
    # The machine's own epmd and node are as they were.
    assert {p: _listening(p) for p in (4369, 5672)} == machine_ports
