"""The HTTP calls a lab makes to its services (the contract's paths), as a mixin of Lab."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import requests

from harness.lab.service import ServiceProcess
from harness.waiting import wait_until


class LabClient:
    """HTTP helpers over `self.services` (name -> ServiceProcess)."""

    services: dict[str, ServiceProcess]

    def url(self, name: str) -> str:
        """Base URL of a service."""
        return self.services[name].url

    def get(self, name: str, path: str, **kwargs: Any) -> Any:
        """GET a JSON document from a service."""
        r = requests.get(self.url(name) + path, timeout=kwargs.pop("timeout", 10), **kwargs)
        r.raise_for_status()
        return r.json()

    def place_order(self, user_id: str, items: list[dict[str, Any]],
                    session: requests.Session | None = None) -> requests.Response:
        """POST one order; return the raw response (201, 4xx or 503)."""
        http = session or requests
        return http.post(self.url("order") + "/order", json={"user_id": user_id, "items": items},
                         timeout=15)

    def inventory(self) -> dict[str, Any]:
        """The inventory's stock."""
        return self.get("inventory", "/inventory")

    def notifications(self) -> list[dict[str, Any]]:
        """Every notification, oldest first."""
        return self.get("notification", "/notifications")

    def orders(self) -> list[dict[str, Any]]:
        """Every order the order service accepted."""
        return self.get("order", "/orders")

    def reservations(self) -> dict[str, Any]:
        """The inventory's reservation ledger and stored outcomes."""
        return self.get("inventory", "/reservations")

    def wait_notified(self, order_ids: Iterable[str], timeout: float = 60.0) -> list[dict]:
        """Wait (bounded) until every given order has a notification; return them all."""
        wanted = set(order_ids)

        def done():
            notes = self.notifications()
            return notes if wanted <= {n["order_id"] for n in notes} else None

        def missing() -> str:
            seen = {n["order_id"] for n in self.notifications()}
            return f"missing: {sorted(wanted - seen)[:10]}"

        return wait_until(done, timeout, f"{len(wanted)} orders notified", detail=missing)
