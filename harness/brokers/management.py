"""The broker's management HTTP API: vhosts for isolation, queue statistics for observing."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import requests

log = logging.getLogger(__name__)
_local = threading.local()


def _session() -> requests.Session:
    # One keep-alive session per thread: the sampler calls the API four times a second.
    if not hasattr(_local, "session"):
        _local.session = requests.Session()
    return _local.session


def _api(broker: Any, method: str, path: str, **kwargs: Any) -> requests.Response:
    url = broker.management_url.rstrip("/") + "/api" + path
    r = _session().request(method, url, auth=tuple(broker.management_auth), timeout=10,
                           **kwargs)
    r.raise_for_status()
    return r


def create_vhost(broker: Any, vhost: str) -> None:
    """Create a vhost and give the broker's user full permissions on it."""
    v = quote(vhost, safe="")
    _api(broker, "PUT", f"/vhosts/{v}", json={})
    user = broker.management_auth[0]
    _api(broker, "PUT", f"/permissions/{v}/{quote(user, safe='')}",
         json={"configure": ".*", "write": ".*", "read": ".*"})


def delete_vhost(broker: Any, vhost: str) -> None:
    """Delete a vhost with everything in it."""
    _api(broker, "DELETE", f"/vhosts/{quote(vhost, safe='')}")


def queues(broker: Any, vhost: str = "/") -> list[dict[str, Any]]:
    """Statistics of every queue in a vhost (depth, unacked, consumers, rates)."""
    cols = "name,messages,messages_ready,messages_unacknowledged,consumers,arguments,type"
    return _api(broker, "GET", f"/queues/{quote(vhost, safe='')}", params={"columns": cols}).json()


def messages_held(broker: Any, vhost: str, ignore: Callable[[str], bool]) -> int | None:
    """Messages ready or unacked in a vhost's queues but those `ignore` names, or None when
    the broker has no management API or it did not answer (never a guess of 0)."""
    if not getattr(broker, "management_url", None):
        return None
    try:
        rows = queues(broker, vhost)
    except Exception as exc:  # no statistics: the caller waits its bound out
        log.debug("management queues: %s", exc)
        return None
    return sum(int(q.get("messages") or 0) for q in rows if not ignore(q["name"]))


def publish(broker: Any, vhost: str, exchange: str, routing_key: str, body: bytes,
            properties: dict[str, Any]) -> bool:
    """Publish one message through the management API (as a non-pika client); True if routed.

    The API encodes what pika cannot, e.g. a header holding a float such as 1e30.
    """
    import base64
    r = _api(broker, "POST", f"/exchanges/{quote(vhost, safe='')}/{quote(exchange, safe='')}"
             "/publish", json={"properties": properties, "routing_key": routing_key,
                               "payload": base64.b64encode(body).decode(),
                               "payload_encoding": "base64"})
    return bool(r.json().get("routed"))


def overview(broker: Any) -> dict[str, Any]:
    """The broker's overview document (version, totals)."""
    return _api(broker, "GET", "/overview").json()


def set_policy(broker: Any, vhost: str, name: str, pattern: str, definition: dict[str, Any],
               apply_to: str = "queues", priority: int = 100) -> None:
    """Set (or replace) a policy on a vhost, e.g. {"max-length": 0, "overflow": ...}."""
    _api(broker, "PUT", f"/policies/{quote(vhost, safe='')}/{quote(name, safe='')}",
         json={"pattern": pattern, "definition": definition, "apply-to": apply_to,
               "priority": priority})


def clear_policy(broker: Any, vhost: str, name: str) -> None:
    """Delete a policy from a vhost."""
    _api(broker, "DELETE", f"/policies/{quote(vhost, safe='')}/{quote(name, safe='')}")
