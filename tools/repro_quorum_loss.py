"""Reproduce (or not) the loss of confirmed quorum-queue messages after kill -9 of a whole cluster.

Issue 18, item 7: kill -9 of all three nodes shortly after the cluster formed brought a quorum
queue back with 0 of 200 confirmed messages; after one whole-cluster restart the same kill
kept all 200. This script runs that experiment on the harness's own local cluster (own node
names, ports, data dirs and epmd; never the machine's node on 5672 or epmd on 4369) and
prints, per try, what came back: whether the queue record survived (a passive declare) and
how many messages it holds, plus where on disk the queue's data was.

    python tools/repro_quorum_loss.py --variant fresh --tries 3
    python tools/repro_quorum_loss.py --variant restarted-first --tries 2

Variants:
    fresh            form the cluster, declare, publish N confirmed, kill -9 all, boot again
    restarted-first  the same after one graceful whole-cluster restart before declaring
    settle           like fresh, but wait --settle seconds between publishing and the kill

What it showed (RabbitMQ 3.10.8, Ra 2.2.0, Erlang 25.2.3): the loss follows the time from
the queue's declaration to the kill, not the cluster's age. Ra records which server id
(UId) holds each queue's log in a DETS table (names.dets) that is flushed to disk only
after 500 ms without access (`auto_save`). Killed within that window, every node reboots
with "names.dets not properly closed, repairing", "pre init for 0 registered servers", and
starts the queue's member under a NEW id with an empty log: the confirmed messages are
still on disk, in the old member's directory, but nothing reads them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pika
import pika.exceptions

from harness.brokers import LocalCluster
from harness.waiting import WaitTimeout, wait_until

QUORUM = {"x-queue-type": "quorum"}


def declare(url: str, queue: str) -> None:
    """Declare a durable quorum queue."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        conn.channel().queue_declare(queue, durable=True, arguments=QUORUM)
    finally:
        conn.close()


def publish_confirmed(url: str, queue: str, n: int) -> int:
    """Publish n persistent messages, each confirmed; return how many were confirmed."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        ch.confirm_delivery()  # a BlockingChannel raises on a nack or a return
        for i in range(n):
            ch.basic_publish("", queue, f"m{i}".encode(),
                             pika.BasicProperties(delivery_mode=2), mandatory=True)
        return n
    finally:
        conn.close()


def passive_depth(urls: list[str], queue: str) -> int | str:
    """Messages in the queue (passive declare on any node), or why it could not be read."""
    last = ""
    for url in urls:
        try:
            conn = pika.BlockingConnection(pika.URLParameters(url))
        except pika.exceptions.AMQPError as exc:
            last = f"cannot connect: {exc!r}"
            continue
        try:
            return conn.channel().queue_declare(queue, passive=True).method.message_count
        except pika.exceptions.ChannelClosedByBroker as exc:
            last = f"{exc.reply_code} {exc.reply_text}"
        finally:
            if conn.is_open:
                conn.close()
    return last


def queue_files(cluster: LocalCluster) -> dict[str, list[str]]:
    """Per node, the quorum (Ra) data files, to see whether the data stayed on disk."""
    out = {}
    for n in cluster.nodes:
        files = sorted(str(p.relative_to(n.base_dir)) for p in (n.base_dir / "mnesia").rglob("*")
                       if p.is_file() and ("quorum" in str(p) or p.suffix in (".wal", ".segment")))
        out[n.node] = files[:20]
    return out


def one_try(variant: str, n: int, settle: float, workdir: Path) -> dict:
    """One experiment on a new cluster; the cluster is closed afterwards."""
    cluster = LocalCluster(workdir=workdir)
    result: dict = {"variant": variant}
    try:
        cluster.start()
        result["formed_s"] = time.monotonic()
        if variant == "restarted-first":
            cluster.restart()
        queue = f"qq-{uuid.uuid4().hex[:8]}"
        declared = time.monotonic()
        declare(cluster.amqp_url, queue)  # returns once the queue's Ra members have started
        result["confirmed"] = publish_confirmed(cluster.amqp_url, queue, n)
        result["depth_before_kill"] = passive_depth(cluster.amqp_urls, queue)
        if settle:
            time.sleep(settle)  # the experiment's own variable, not a wait for a condition
        result["since_formed_s"] = round(time.monotonic() - result.pop("formed_s"), 1)
        result["declare_to_kill_s"] = round(time.monotonic() - declared, 2)
        cluster.kill()
        cluster.start()  # boots the nodes that are not running; no new join
        wait_until(lambda: isinstance(passive_depth(cluster.amqp_urls, queue), int)
                   or "404" in str(passive_depth(cluster.amqp_urls, queue)), 120,
                   "the queue readable or reported missing")
        # A quorum queue may need its leader elected before it reports its messages.
        with contextlib.suppress(WaitTimeout):
            wait_until(lambda: passive_depth(cluster.amqp_urls, queue) == n, 30, "all back")
        result["depth_after_restart"] = passive_depth(cluster.amqp_urls, queue)
        result["cluster_status"] = cluster.cluster_status().get("running_nodes")
        result["files"] = queue_files(cluster)
        # Ra's registry of its servers (names.dets) as each node found it at the reboot.
        result["registered_at_reboot"] = {
            n.node: re.findall(r"ra system 'quorum_queues' running pre init for (\d+) "
                               r"registered servers", n.log_path.read_text(errors="replace"))[-1:]
            for n in cluster.nodes}
    finally:
        cluster.close()
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the tries and print one JSON line each."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", choices=("fresh", "restarted-first", "settle"),
                        default="fresh")
    parser.add_argument("--tries", type=int, default=1)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--settle", type=float, default=0.0)
    parser.add_argument("--keep", help="folder to keep the clusters' data and logs in")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    base = Path(args.keep or tempfile.mkdtemp(prefix="repro-qq-"))
    lost = 0
    for i in range(args.tries):
        r = one_try(args.variant, args.messages, args.settle if args.variant == "settle" else 0,
                    base / f"try{i + 1}")
        print(json.dumps(r), flush=True)
        lost += r.get("depth_after_restart") != args.messages
    print(f"{args.variant}: {lost} of {args.tries} tries lost confirmed messages "
          f"(data in {base})", flush=True)
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
