"""A broker someone else runs, given by URL: the harness waits for it, and never faults it."""

from __future__ import annotations

from typing import NoReturn
from urllib.parse import unquote, urlparse

from harness.brokers.base import Broker, BrokerSettings


class UrlBroker(Broker):
    """A broker given by URL: it can be waited for, not stopped, killed or restarted."""

    provider = "url"
    can_stop = False
    can_kill = False

    def __init__(self, url: str, settings: BrokerSettings | None = None) -> None:
        super().__init__(settings)
        p = urlparse(url)
        if p.scheme not in ("amqp", "amqps") or not p.hostname:
            raise ValueError(f"not an amqp:// or amqps:// URL with a host: {url!r}")
        self.amqp_url = url
        self.management_auth = (unquote(p.username or "guest"), unquote(p.password or "guest"))
        host = f"[{p.hostname}]" if ":" in p.hostname else p.hostname
        self.management_url = self.settings.management_url or f"http://{host}:15672"

    def start(self) -> None:
        """Wait until the broker accepts a connection."""
        self.wait_ready(self.settings.start_timeout)
        self._started = True

    def _refuse(self, what: str) -> NoReturn:
        raise NotImplementedError(
            f"cannot {what} a broker given by URL ({self._safe_url()}): it is not ours. "
            "Use the local, local-cluster or docker provider for fault injection.")

    def stop(self) -> None:
        """Not possible for a broker given by URL."""
        self._refuse("stop")

    def kill(self) -> None:
        """Not possible for a broker given by URL."""
        self._refuse("kill")

    def restart(self) -> None:
        """Not possible for a broker given by URL."""
        self._refuse("restart")

    def _teardown(self) -> None:
        """Nothing to tear down: the broker is not ours."""
