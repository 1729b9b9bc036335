"""RabbitMQ in a container via testcontainers, with fixed host ports."""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

from harness.brokers.base import (
    Broker,
    BrokerError,
    BrokerNotFound,
    BrokerSettings,
    amqp_url_for,
    short,
)
from harness.ports import free_ports, release_ports


def docker_available(timeout: float = 2.0) -> tuple[bool, str]:
    """Whether a Docker daemon answers a ping (as testcontainers would reach it), and why."""
    try:
        from testcontainers.core.docker_client import DockerClient

        client = DockerClient(timeout=timeout).client
        try:
            client.ping()
        finally:
            client.close()
    except ImportError as exc:
        return False, f"testcontainers is not installed ({exc})"
    except Exception as exc:  # DockerException, requests errors, timeouts: all mean "no"
        return False, f"no Docker daemon ({short(exc)})"
    return True, "a Docker daemon answers"


class DockerBroker(Broker):
    """RabbitMQ in a container via testcontainers, with fixed host ports.

    The host ports are chosen here and bound explicitly, so a container stop/start keeps
    them and clients reconnect to the same URL. Fresh management stats come from a conf.d
    file copied into the container before it starts (/etc/rabbitmq/conf.d/90-rabbit-lab.conf).
    Ryuk and connection-mode options come from the TESTCONTAINERS_* environment as usual.
    """

    provider = "docker"

    def __init__(self, settings: BrokerSettings | None = None) -> None:
        super().__init__(settings)
        s = self.settings
        try:
            from docker.errors import DockerException

            with warnings.catch_warnings():  # its module uses a decorator it deprecates itself
                warnings.simplefilter("ignore", DeprecationWarning)
                from testcontainers.community.rabbitmq import RabbitMqContainer
        except ImportError as exc:
            raise BrokerNotFound(f"testcontainers is not installed ({exc})") from exc
        self.amqp_port, self.management_port = free_ports(2)
        conf = (f"collect_statistics_interval = {s.stats_interval_ms}\n"
                "management.sample_retention_policies.global.minute = 1\n"
                "management.sample_retention_policies.basic.minute = 1\n"
                "management.sample_retention_policies.detailed.10 = 1\n")
        try:
            # port=5672 explicitly: the class would otherwise read RABBITMQ_NODE_PORT from env.
            self._container = (
                RabbitMqContainer(s.image, port=5672, username=s.username, password=s.password)
                .with_bind_ports(5672, self.amqp_port)
                .with_bind_ports(15672, self.management_port)
                .with_copy_into_container(conf.encode(), "/etc/rabbitmq/conf.d/90-rabbit-lab.conf")
            )
        except DockerException as exc:  # raised by the constructor when no daemon answers
            raise BrokerNotFound(f"no Docker daemon ({short(exc)})") from exc

    def _wrapped(self) -> Any:
        return self._container.get_wrapped_container()

    def _has_container(self) -> bool:
        try:
            self._wrapped()
        except Exception:  # testcontainers: ContainerStartException until it is created
            return False
        return True

    def _refresh_urls(self) -> None:
        # The container host and mapped port depend on testcontainers' connection mode.
        host = self._container.get_container_host_ip()
        s = self.settings
        self.amqp_url = amqp_url_for(s.username, s.password, host,
                                     self._container.get_exposed_port(5672))
        self.management_url = f"http://{host}:{self._container.get_exposed_port(15672)}"

    def start(self) -> None:
        """Create and start the container (or start the stopped one); block until ready."""
        with self._lock:
            if self._closed:
                raise BrokerError("this broker is closed; open a new one")
            self._register()
            try:
                if not self._has_container():
                    self._container.start()  # pulls if needed, copies the conf, waits for pika
                else:
                    self._wrapped().start()
            except Exception as exc:
                raise BrokerError(f"container {self.settings.image} failed to start: "
                                  f"{short(exc, 500)}{self._diagnostics()}") from exc
            self._refresh_urls()
            self.wait_ready(self.settings.start_timeout)
            self._started = True

    def _check_alive(self) -> None:
        c = self._wrapped()
        c.reload()
        if c.status in ("exited", "dead"):
            raise BrokerError(f"container {c.short_id} is {c.status}{self._diagnostics()}")

    def _diagnostics(self) -> str:
        try:
            logs = self._wrapped().logs(tail=40).decode(errors="replace")
        except Exception:  # no container yet, or the engine is gone
            return ""
        return f"\n--- tail of the container log ---\n{logs}"

    def stop(self) -> None:
        """docker stop: SIGTERM, then SIGKILL after stop_timeout; blocks until stopped."""
        with self._lock:
            self._wrapped().stop(timeout=int(self.settings.stop_timeout))

    def kill(self) -> None:
        """docker kill (SIGKILL); blocks until the container has exited."""
        with self._lock:
            c = self._wrapped()
            c.reload()
            if c.status == "running":
                c.kill()
                c.wait(timeout=30)

    def restart(self) -> None:
        """Start the same container again (same data volume, same host ports)."""
        with self._lock:
            self._wrapped().reload()
            if self._wrapped().status == "running":
                self.stop()
            self.start()

    def _teardown(self) -> None:
        """Remove the container with its anonymous volumes."""
        with contextlib.suppress(Exception):
            self._container.stop()  # testcontainers: remove(force=True, v=True)
        release_ports((self.amqp_port, self.management_port))
