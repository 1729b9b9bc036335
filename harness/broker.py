"""Kept for existing imports: the broker code lives in the `harness.brokers` package."""

from harness.brokers import (  # noqa: F401
    DEBIAN_RELEASE_SCRIPT,
    DEFAULT_IMAGE,
    HOWTO,
    KINDS,
    Broker,
    BrokerError,
    BrokerSettings,
    BrokerUnavailable,
    DockerBroker,
    LocalBroker,
    LocalCluster,
    Node,
    UrlBroker,
    docker_available,
    find_server_script,
    open_broker,
    parse_kind,
)

__all__ = [
    "DEBIAN_RELEASE_SCRIPT", "DEFAULT_IMAGE", "HOWTO", "KINDS", "Broker", "BrokerError",
    "BrokerSettings", "BrokerUnavailable", "DockerBroker", "LocalBroker", "LocalCluster",
    "Node", "UrlBroker", "docker_available", "find_server_script", "open_broker", "parse_kind",
]
