"""The `failover` scenario: kill the RabbitMQ node that leads `order_placed`, mid-stream.

On a 3-node cluster with quorum queues (LAB_QUEUE_TYPE=quorum), orders stream through the
lab while the node that leads `order_placed` is killed (kill -9 of its process group) and,
a few seconds later, started again. The services are given every node's address
(AMQP_URLS), so they can reconnect to a survivor. A watcher samples, twice a second, which
node leads the queue (management API) and which node each service is connected to (its TCP
connections, via psutil). The checker must stay valid: nothing lost, nothing reserved twice.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
from matplotlib.figure import Figure

from harness.brokers import Broker, LocalCluster, open_broker
from harness.invariants import Verdict
from harness.lab import LabConfig
from harness.load import LoadSpec
from harness.reporting.plots import mark_faults
from harness.reporting.results import ScenarioResult
from harness.runner import Run
from harness.scenarios.common import accepted_ids, judge
from harness.scenarios.registry import Scenario, register
from harness.waiting import Periodic, WaitTimeout, wait_until
from lab_services import topology as topo

log = logging.getLogger(__name__)

PLENTY = "100000"


@contextlib.contextmanager
def _cluster_for(broker: Broker | None) -> Iterator[LocalCluster]:
    """The given cluster, or a 3-node local cluster of our own (closed after)."""
    if isinstance(broker, LocalCluster):
        yield broker
        return
    if broker is not None:
        log.info("failover needs a cluster, and %s is a single broker: starting a 3-node "
                 "local cluster for this scenario", broker.provider)
    with open_broker("local-cluster") as cluster:
        assert isinstance(cluster, LocalCluster)
        yield cluster


class ClusterWatch:
    """A background thread: who leads a queue, and which node each service is connected to."""

    def __init__(self, cluster: LocalCluster, queue: str, vhost: str,
                 services: dict[str, Any], t0: float, interval: float = 0.5) -> None:
        self.cluster, self.queue, self.vhost = cluster, queue, vhost
        self.services, self.t0, self.interval = services, t0, interval
        self.leaders: list[dict[str, Any]] = []
        self.links: list[dict[str, Any]] = []
        self._by_port = {n.amqp_port: n.name for n in cluster.nodes}
        self._loop = Periodic(self._tick, interval, name="cluster-watch")

    def __enter__(self) -> ClusterWatch:
        self._loop.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.stop()

    def connected_to(self, pid: int) -> str | None:
        """The node(s) a process holds established AMQP connections to, joined by '+'."""
        try:
            conns = psutil.Process(pid).net_connections(kind="tcp")
        except psutil.Error:
            return None
        nodes = {self._by_port[c.raddr.port] for c in conns
                 if c.raddr and c.status == psutil.CONN_ESTABLISHED
                 and c.raddr.port in self._by_port}
        return "+".join(sorted(nodes)) or None

    def _tick(self) -> None:
        t = time.monotonic() - self.t0
        try:
            # A short timeout: a node that is cut off must not stall the samples.
            leader = self.cluster.leader(self.queue, self.vhost, timeout=1.0)
        except Exception:  # mid-election, or the API node is the one just killed
            leader = None
        self.leaders.append({"t": t, "leader": leader})
        for name, svc in self.services.items():
            pid = svc.proc.pid if svc.proc is not None and svc.running else None
            self.links.append({"t": t, "service": name,
                               "node": self.connected_to(pid) if pid else None})

    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(leaders: t, leader) and (links: t, service, node) as DataFrames."""
        return (pd.DataFrame(list(self.leaders), columns=["t", "leader"]),
                pd.DataFrame(list(self.links), columns=["t", "service", "node"]))


def leader_changes(leaders: pd.DataFrame) -> list[dict[str, Any]]:
    """Each time a different node was seen leading (gaps without a leader are skipped)."""
    out: list[dict[str, Any]] = []
    for row in leaders.dropna().itertuples():
        if not out or out[-1]["leader"] != row.leader:
            out.append({"t": round(float(row.t), 2), "leader": row.leader})
    return out


def link_changes(links: pd.DataFrame) -> dict[str, list[dict[str, Any]]]:
    """Per service, each change of the node it is connected to (None: not connected)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for service, g in links.groupby("service"):
        seq: list[dict[str, Any]] = []
        for row in g.itertuples():
            node = row.node if isinstance(row.node, str) else None
            if not seq or seq[-1]["node"] != node:
                seq.append({"t": round(float(row.t), 2), "node": node})
        out[str(service)] = seq
    return out


def moved_to_survivor(links: pd.DataFrame, victim: str, down_from: float,
                      down_until: float) -> dict[str, bool]:
    """Per service that was connected to `victim` when it died: did it connect to another
    node while the victim was down?"""
    before = links[links["t"] < down_from].groupby("service")["node"].last()
    down = links[(links["t"] >= down_from) & (links["t"] < down_until)]
    out = {}
    for service, node in before.items():
        if isinstance(node, str) and victim in node.split("+"):
            seen = down.loc[down["service"] == service, "node"].dropna()
            out[str(service)] = any(victim not in n.split("+") for n in seen)
    return out


def failover_chart(load: pd.DataFrame, latency: pd.DataFrame, leaders: pd.DataFrame,
                   links: pd.DataFrame, nodes: list[str], timeline: pd.DataFrame,
                   bin_s: float = 0.5) -> Figure:
    """Three panels on one time axis: orders per second, who leads `order_placed`, and
    which node each service is connected to; the faults are marked on each."""
    fig = Figure(figsize=(10, 7.5))
    ax_rate, ax_lead, ax_link = fig.subplots(3, 1, sharex=True,
                                             gridspec_kw={"height_ratios": [2, 1, 1.4]})
    ok = load.loc[load["accepted"], "t_answered"].dropna()
    done = latency["t_notified"].dropna() if "t_notified" in latency else pd.Series(dtype=float)
    end = max([ok.max() if len(ok) else 0, done.max() if len(done) else 0,
               leaders["t"].max() if len(leaders) else 0]) + bin_s
    bins = np.arange(0, end + bin_s, bin_s)
    for series, label in ((ok, "accepted"), (done, "notified")):
        counts, edges = np.histogram(series, bins=bins)
        ax_rate.step(edges[:-1], counts / bin_s, where="post", label=label)
    ax_rate.set_ylabel("orders / s")
    ax_rate.set_title("Killing the leader of order_placed: a new leader, the services move")
    ax_rate.legend(fontsize=8, loc="upper left")
    short = {n: f"node {i + 1}" for i, n in enumerate(nodes)}
    ax_lead.scatter(leaders["t"], [nodes.index(x) if x in nodes else -1
                                   for x in leaders["leader"]], s=8, color="tab:blue")
    ax_lead.set_yticks([-1, *range(len(nodes))], ["none", *(short[n] for n in nodes)])
    ax_lead.set_ylabel("leader")
    services = sorted(links["service"].unique()) if len(links) else []
    for k, service in enumerate(services):
        g = links[links["service"] == service]
        ys = [(nodes.index(x.split("+")[0]) if isinstance(x, str) and x.split("+")[0] in nodes
               else -1) + 0.12 * (k - 1) for x in g["node"]]
        ax_link.scatter(g["t"], ys, s=6, label=service)
    ax_link.set_yticks([-1, *range(len(nodes))], ["none", *(short[n] for n in nodes)])
    ax_link.set_ylabel("connected to")
    ax_link.set_xlabel("time since run start (s)")
    if services:
        ax_link.legend(fontsize=7, loc="upper left", ncol=3)
    for ax in (ax_rate, ax_lead, ax_link):
        ax.grid(alpha=0.3)
        ax.set_xlim(0, end)
        mark_faults(ax, timeline)
    fig.tight_layout()
    return fig


def failover(broker: Broker | None = None, *, orders: int = 900, rate: float = 30.0,
             kill_after_s: float = 3.0, down_s: float = 6.0, partition_s: float = 10.0,
             out: str | Path = "runs", progress: bool = True, **lab: Any) -> ScenarioResult:
    """Stream orders, kill -9 the node leading `order_placed`, start it again later:
    a new leader takes over, services reconnect, nothing is lost or reserved twice.
    When the nodes run in network namespaces, the new leader is then partitioned from
    the others until it pauses, `partition_s` seconds more, and healed (0 skips this)."""
    cfg = LabConfig(queue_type="quorum", initial_stock=PLENTY, **lab)
    with _cluster_for(broker) as cluster, Run("failover", cluster, out=out, lab=cfg,
                                              progress=progress) as run:
        vhost = run.lab.vhost or "/"
        nodes = [n.name for n in cluster.nodes]
        spec = LoadSpec(orders=orders, rate=rate, concurrency=8, seed=41,
                        retry_unavailable_for=60.0, description="orders through a failover")
        with ClusterWatch(cluster, topo.QUEUE_ORDER_PLACED, vhost, run.lab.services,
                          run.t0) as watch:
            loader = run.place_in_background(spec)
            run.hold(kill_after_s)  # let the stream establish itself first
            old = cluster.leader(topo.QUEUE_ORDER_PLACED, vhost)
            victim = cluster.node_named(old)
            run.timeline.record("kill", f"node {nodes.index(old) + 1}",
                                f"SIGKILL {old}, leader of {topo.QUEUE_ORDER_PLACED}")
            victim.kill()
            elected, new = None, None
            try:
                new = wait_until(lambda: (lambda x: x if x and x != old else None)(
                    _leader_or_none(cluster, vhost)), 60, "a new leader of order_placed")
                elected = run.timeline.now()
                run.timeline.record("elected", f"node {nodes.index(new) + 1}", new)
            except WaitTimeout as exc:
                log.warning("%s", exc)
            run.hold(down_s)
            restart_t = run.timeline.now()
            run.timeline.record("start", f"node {nodes.index(old) + 1}", "same data dir")
            cluster.start_node(victim)
            run.timeline.record("ready", f"node {nodes.index(old) + 1}", "rejoined")
            cut = _partition_leader(run, cluster, vhost, nodes, partition_s)
            load = loader.join()
            accepted = load.loc[load["accepted"], "order_id"].tolist()
            run.wait_notified(accepted, timeout=90)
            run.hold(1.0)  # a few more watch samples after the dust settles
        leaders, links = watch.frames()
        state = run.collect()
        verdict = judge(run, state, accepted_ids(load))
        problems = list(verdict.problems)
        changes = leader_changes(leaders)
        if elected is None:
            problems.append(f"no other node took over {topo.QUEUE_ORDER_PLACED} after the kill")
        kill_t = float(run.timeline.frame().query("kind == 'kill'")["t"].iloc[0])
        moved = moved_to_survivor(links, old, kill_t, restart_t)
        stuck = sorted(s for s, ok in moved.items() if not ok)
        if stuck:
            problems.append(f"{', '.join(stuck)} did not reconnect to a surviving node while "
                            f"{old} was down (do they get AMQP_URLS?)")
        verdict = Verdict(not problems, verdict.counts, problems)
        frames = run.frames(load, state)
        frames["leaders"], frames["connections"] = leaders, links
        summary = run.base_summary(load, state, verdict, frames["latency"])
        summary.update({
            "nodes": nodes,
            "killed": old,
            "new_leader": new,
            "election_s": round(elected - kill_t, 2) if elected is not None else None,
            "leaders": changes,
            "service_connections": link_changes(links),
            "moved_to_a_survivor": moved,
            "reconnects": {n: (h or {}).get("reconnects") for n, h in state.health.items()},
            "partitioned": cut,
            "refused_then_retried": int((load["attempts"] > 1).sum()),
            "orders_refused_finally": int((~load["accepted"]).sum()),
        })
        result = ScenarioResult("failover", summary, verdict, frames)
        result.timeline = run.timeline.frame()
        result.figures = {"failover": failover_chart(load, frames["latency"], leaders, links,
                                                     nodes, result.timeline)}
        result.write(run.run_dir)
        log.info("%s", result.text())
        return result


def _partition_leader(run: Run, cluster: LocalCluster, vhost: str, nodes: list[str],
                      seconds: float) -> str | None:
    """Cut the node leading order_placed off until it paused and `seconds` more, then heal
    it; its name, or None when the cluster cannot be partitioned or the step is off."""
    if not cluster.can_partition or seconds <= 0:
        return None
    name = _leader_or_none(cluster, vhost)
    if name is None:
        return None
    node = cluster.node_named(name)
    label = f"node {nodes.index(name) + 1}"
    run.timeline.record("partition", label,
                        f"{name} cut off; held {seconds:.0f} s after it paused")
    cluster.partition(node)
    try:
        run.hold(seconds)
    finally:
        cluster.heal(node)
    run.timeline.record("heal", label, "link up again")
    return name


def _leader_or_none(cluster: LocalCluster, vhost: str) -> str | None:
    try:
        return cluster.leader(topo.QUEUE_ORDER_PLACED, vhost)
    except Exception:  # mid-election, or the API node was just killed
        return None


register(Scenario("failover", failover, black_box=False, needs_restartable_broker=True,
                  needs_cluster=True, rank=110,
                  ci_kwargs={"orders": 300, "partition_s": 0},
                  summary="kill -9 of the node leading order_placed on a 3-node cluster "
                          "(quorum queues): a new leader, services reconnect, nothing lost"))
