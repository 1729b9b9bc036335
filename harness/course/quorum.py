"""How many nodes a quorum queue can lose and still confirm: measured on a local cluster.

Notebook 11's exercise is judged by this measurement, not by a fixed number::

    steps = node_losses(cluster, "orders_probe")
    # [{"down": 0, "confirmed": 20, ...}, {"down": 1, ...}, {"down": 2, "confirmed": 0, ...}]

It declares a quorum queue with a replica on every node, then kills -9 one node after
another (the queue's leader first), and after each kill publishes a batch of persistent
messages with publisher confirms to a node still running, counting the confirms that come
within `wait_s`. Then it boots the killed nodes again, waits until every node runs, and
counts the queue: every confirmed message must be there. Never the machine's own node.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import pika
import pika.exceptions

from harness.brokers.base import short
from harness.brokers.cluster import LocalCluster, boot_together
from harness.waiting import WaitTimeout, wait_until

CLUSTER_KIND = "local-cluster"


def cluster_kind(wanted: str) -> str:
    """The broker kind for a cluster chapter: LAB_BROKER if it names a local cluster of three
    nodes, else "local-cluster" (a single node, Docker or a URL cannot lose one node)."""
    return wanted if wanted.strip() in (CLUSTER_KIND, "local:3") else CLUSTER_KIND


def publish_confirmed(url: str, queue: str, count: int, wait_s: float) -> tuple[int, str]:
    """Publish `count` persistent messages with confirms on a connection of its own; return
    how many the broker confirmed within `wait_s` seconds in all, and what stopped the rest."""
    box: dict[str, Any] = {"confirmed": 0, "why": "", "stop": False}

    def publish() -> None:
        try:
            params = pika.URLParameters(url)
            params.socket_timeout = wait_s
            params.connection_attempts = 1
            conn = pika.BlockingConnection(params)
            try:
                ch = conn.channel()
                ch.confirm_delivery()  # basic_publish returns once the broker confirmed it
                for i in range(count):
                    if box["stop"]:  # given up on: publish no more (one may still land)
                        break
                    ch.basic_publish("", queue, f"order {i}".encode(),
                                     pika.BasicProperties(delivery_mode=2), mandatory=True)
                    box["confirmed"] += 1
            finally:
                if conn.is_open:
                    conn.close()
        except pika.exceptions.AMQPConnectionError as exc:  # its str() is often empty
            box["why"] = f"could not connect ({short(exc)})".replace(": )", ")")
        except (pika.exceptions.AMQPError, OSError) as exc:
            box["why"] = short(exc)

    # A publish into a queue without a majority is neither confirmed nor refused: it waits.
    # A thread of its own bounds that wait (it is a daemon: it ends with the broken link).
    worker = threading.Thread(target=publish, name="quorum-probe", daemon=True)
    worker.start()
    worker.join(wait_s)
    if worker.is_alive():
        box["stop"] = True
        return box["confirmed"], f"no confirm within {wait_s:.0f} s"
    return box["confirmed"], box["why"]


def _leader_or_none(cluster: LocalCluster, queue: str) -> str | None:
    try:
        return cluster.leader(queue, timeout=2.0)
    except Exception:  # no node's API answers, or the queue has no leader now
        return None


def _depth_or_none(url: str, queue: str) -> int | None:
    try:
        conn = pika.BlockingConnection(pika.URLParameters(url))
    except (pika.exceptions.AMQPError, OSError):
        return None
    try:
        return conn.channel().queue_declare(queue, passive=True).method.message_count
    except (pika.exceptions.AMQPError, OSError):
        return None  # the queue has no leader yet
    finally:
        if conn.is_open:
            conn.close()


def _all_running(cluster: LocalCluster) -> bool:
    try:
        return len(cluster.running_nodes()) == len(cluster.nodes)
    except Exception:  # a node's API is still booting, or a peer was just lost
        return False


def node_losses(cluster: LocalCluster, queue: str, *, batch: int = 20, wait_s: float = 10.0,
                settle_s: float = 120.0) -> list[dict[str, Any]]:
    """Kill one node after another (a majority lost at the end) and count confirmed publishes
    after each kill; boot the killed nodes again and count the queue. One dict per step:
    down (nodes killed), killed (names), leader (after the kill, or None), confirmed (of
    `batch`), why (what stopped the rest); the last step also has `after_recovery`."""
    if not isinstance(cluster, LocalCluster) or len(cluster.nodes) < 3:
        raise TypeError("node_losses needs a local cluster of three nodes or more")
    wait_until(lambda: _all_running(cluster), settle_s, "every node running before the probe")
    conn = pika.BlockingConnection(pika.URLParameters(cluster.nodes[0].amqp_url))
    try:
        ch = conn.channel()
        ch.queue_delete(queue)  # a clean count, also when the notebook runs this twice
        ch.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    finally:
        conn.close()
    wait_until(lambda: len(cluster.members(queue)) == len(cluster.nodes), 30,
               f"a replica of {queue} on every node")
    killed: list[Any] = []
    steps: list[dict[str, Any]] = []
    majority = len(cluster.nodes) // 2 + 1
    try:
        while True:
            alive = [n for n in cluster.nodes if n not in killed]
            leader = _leader_or_none(cluster, queue) if len(alive) >= majority else None
            confirmed, why = publish_confirmed(alive[-1].amqp_url, queue, batch, wait_s)
            steps.append({"down": len(killed), "killed": [n.name for n in killed],
                          "leader": leader, "publish_to": alive[-1].name,
                          "confirmed": confirmed, "sent": batch, "why": why})
            if len(alive) < majority:
                break
            # The leader goes first (a leader loss is the interesting one); then any other.
            name = leader or alive[0].name
            victim = next((n for n in alive if n.name == name), alive[0])
            victim.kill()  # kill -9 of its process group
            killed.append(victim)
            if len(cluster.nodes) - len(killed) >= majority:
                old = victim.name
                # A new leader among the survivors (bounded: the publish tells the rest).
                with contextlib.suppress(WaitTimeout):
                    wait_until(lambda o=old: (lambda x: x if x and x != o else None)(
                        _leader_or_none(cluster, queue)), 30, f"a new leader of {queue}")
    finally:
        if killed:
            boot_together(killed)  # together: each waits for its peers' tables
    wait_until(lambda: _all_running(cluster), settle_s, "every node running again")
    total = sum(s["confirmed"] for s in steps)
    try:
        after = wait_until(lambda: (lambda d: d if d is not None and d >= total else None)(
            _depth_or_none(cluster.nodes[0].amqp_url, queue)), 60,
            f"the {total} confirmed messages in {queue}")
    except WaitTimeout:
        after = _depth_or_none(cluster.nodes[0].amqp_url, queue)
    steps[-1]["after_recovery"] = after
    steps[-1]["confirmed_in_all"] = total
    return steps


def losable(steps: list[dict[str, Any]]) -> int:
    """The most nodes down at a step where every message of the batch was confirmed (-1: not
    even with every node up, so the measurement says nothing)."""
    return max((s["down"] for s in steps if s["confirmed"] == s["sent"]), default=-1)
