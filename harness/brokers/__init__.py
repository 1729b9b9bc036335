"""Broker providers: a node of our own, a cluster of them, a container, or a URL.

All share the `Broker` base (capabilities `can_stop`, `can_kill`; `nodes`, `amqp_urls`)::

    from harness.brokers import open_broker

    with open_broker("local-cluster") as cluster:   # or auto | local | local:N | docker | URL
        print(cluster.amqp_urls, [n.name for n in cluster.nodes])
"""

from harness.brokers.base import (
    DEFAULT_IMAGE,
    HOWTO,
    Broker,
    BrokerError,
    BrokerNotFound,
    BrokerSettings,
    Node,
)
from harness.brokers.choose import KINDS, open_broker, parse_kind, provider_of
from harness.brokers.cluster import LocalCluster
from harness.brokers.docker import DockerBroker, docker_available
from harness.brokers.local import DEBIAN_RELEASE_SCRIPT, LocalBroker, find_server_script
from harness.brokers.url import UrlBroker

__all__ = [
    "DEBIAN_RELEASE_SCRIPT", "DEFAULT_IMAGE", "HOWTO", "KINDS", "Broker", "BrokerError",
    "BrokerSettings", "BrokerNotFound", "DockerBroker", "LocalBroker", "LocalCluster",
    "Node", "UrlBroker", "docker_available", "find_server_script", "open_broker", "parse_kind",
    "provider_of",
]
