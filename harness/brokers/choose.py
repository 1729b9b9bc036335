"""The provider choice, in one place: auto | local | local-cluster | local:N | docker | URL."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.brokers.base import Broker, BrokerNotFound, BrokerSettings
from harness.brokers.cluster import MAX_NODES, LocalCluster
from harness.brokers.docker import DockerBroker, docker_available
from harness.brokers.local import LocalBroker, find_server_script, no_script
from harness.brokers.netns import netns_available
from harness.brokers.url import UrlBroker

# One logger for broker choice: users and tests filter on "harness.brokers".
log = logging.getLogger("harness.brokers")

KINDS = "auto, local, local-cluster, local:N (N nodes), docker, url or an amqp:// URL"


@dataclass(frozen=True)
class Request:
    """What a --broker value asks for, with the settings every provider reads."""

    nodes: int
    url: str | None
    settings: BrokerSettings
    workdir: str | Path | None


def _url(req: Request) -> tuple[Broker, str]:
    if not req.url:
        raise ValueError("kind='url' needs url=... or the AMQP_URL environment variable")
    return UrlBroker(req.url, req.settings), "a URL was given"


def _local(req: Request) -> tuple[Broker, str]:
    return LocalBroker(req.settings, req.workdir), "asked for local"


def _local_cluster(req: Request) -> tuple[Broker, str]:
    netns, why = _use_netns(req.settings.cluster_netns)
    return (LocalCluster(req.settings, req.workdir, size=req.nodes, netns=netns),
            f"asked for {req.nodes} local nodes; {why}")


def _docker(req: Request) -> tuple[Broker, str]:
    ok, why = docker_available(req.settings.docker_ping_timeout)
    if not ok:
        raise BrokerNotFound(why)
    return DockerBroker(req.settings), "asked for docker"


def _auto_provider(url: str | None, settings: BrokerSettings) -> tuple[str, str]:
    """What "auto" picks, and why: a URL if given, else Docker if it answers, else local."""
    if url:
        return "url", "a URL was given (url= or AMQP_URL)"
    ok, docker_why = docker_available(settings.docker_ping_timeout)
    return ("docker" if ok else "local"), docker_why


def _auto(req: Request) -> tuple[Broker, str]:
    provider, why = _auto_provider(req.url, req.settings)
    if provider == "url":
        return UrlBroker(req.url or "", req.settings), why
    if provider == "docker":
        return DockerBroker(req.settings), why
    script = find_server_script(req.settings.server_script)  # why: Docker's answer
    if script is None:
        raise BrokerNotFound(f"AMQP_URL is not set; {why}; {no_script(req.settings)}")
    return LocalBroker(req.settings, req.workdir), f"{why}; found {script}"


# Every provider, by its --broker name: a new provider is its module plus one line here.
PROVIDERS: dict[str, Callable[[Request], tuple[Broker, str]]] = {
    "auto": _auto,
    "url": _url,
    "local": _local,
    "local-cluster": _local_cluster,
    "docker": _docker,
}


def parse_kind(kind: str) -> tuple[str, int]:
    """(provider, nodes) for a --broker value; a URL gives ("url", 1).

    `local-cluster` is `local:3`; `local:1` is `local`.
    """
    kind = kind.strip()
    if kind.startswith(("amqp://", "amqps://")):
        return "url", 1
    if kind == "local-cluster":
        return "local-cluster", 3
    if m := re.fullmatch(r"local:(\d{1,2})", kind):
        n = int(m.group(1))
        if not 1 <= n <= MAX_NODES:
            raise ValueError(f"local:N takes 1..{MAX_NODES} nodes, not {n}")
        return ("local", 1) if n == 1 else ("local-cluster", n)
    if kind in PROVIDERS:
        return kind, 1
    raise ValueError(f"--broker must be {KINDS}, not {kind!r}")


def _use_netns(mode: str) -> tuple[bool, str]:
    """Whether a local cluster runs in network namespaces, and why."""
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"LAB_CLUSTER_NETNS must be auto, on or off, not {mode!r}")
    if mode == "off":
        return False, "namespaces off: nodes on loopback, no partitions"
    ok, why = netns_available()
    if not ok and mode == "on":
        raise BrokerNotFound(f"network namespaces were asked for, but {why}")
    return ok, ("each node in its own network namespace" if ok
                else f"nodes on loopback, no partitions ({why})")


def choose(kind: str, url: str | None, settings: BrokerSettings,
           workdir: str | Path | None) -> tuple[Broker, str]:
    """The (not yet started) broker for `kind`, and why it was chosen."""
    provider, nodes = parse_kind(kind)
    if kind.startswith(("amqp://", "amqps://")):
        url = kind
    return PROVIDERS[provider](Request(nodes, url, settings, workdir))


def provider_of(kind: str, url: str | None = None, **settings: Any) -> str:
    """The provider `open_broker(kind, url=url, **settings)` would use, none started
    ("auto" asks Docker, as `open_broker` does)."""
    s = BrokerSettings(**settings)
    provider, _ = parse_kind(kind)
    if kind.startswith(("amqp://", "amqps://")):
        return "url"
    return _auto_provider(url or s.url, s)[0] if provider == "auto" else provider


def open_broker(kind: str = "auto", *, url: str | None = None,
                workdir: str | Path | None = None, **settings: Any) -> Broker:
    """Choose a provider, start its broker and return it, ready for connections.

    Args:
        kind: "auto" (AMQP URL, else Docker, else a local node), "local", "local-cluster"
            (3 local nodes joined), "local:N", "docker", "url", or an amqp:// URL.
        url: broker URL for "url"/"auto" (default: env AMQP_URL).
        workdir: folder for local nodes' data and logs, kept at close
            (default: a temporary folder, removed at close).
        **settings: fields of BrokerSettings, e.g. image=..., start_timeout=...
    """
    s = BrokerSettings(**settings)
    broker, why = choose(kind, url or s.url, s, workdir)
    log.info("broker: using the %s provider (%s)", broker.provider, why)
    try:
        broker.start()
    except BaseException:
        broker.close()
        raise
    return broker
