"""The HTTP calls a lab makes to its services (the contract's paths), as a mixin of Lab."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import requests

from harness.lab.deadline import session as http_session
from harness.lab.service import ServiceProcess
from harness.waiting import wait_until


@dataclass(frozen=True)
class ContractGap:
    """A part of the contract an implementation does not offer: a path, a queue, a shape."""

    what: str  # e.g. "GET /reservations (inventory)", "queue 'dlq'"
    detail: str  # e.g. "answered 404"
    blocks: tuple[str, ...] = ()  # the run state it leaves unknown: "ledger", "dlq", ...

    def to_dict(self) -> dict[str, Any]:
        """The gap as JSON-able data."""
        return {"what": self.what, "detail": self.detail, "blocks": list(self.blocks)}


class MissingPath(requests.HTTPError):
    """A contract path answered 404 or 405: the implementation does not offer it."""

    def __init__(self, message: str, gap: ContractGap, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.gap = gap


class LabClient:
    """HTTP helpers over `self.services` (name -> ServiceProcess)."""

    services: dict[str, ServiceProcess]
    gaps: list[ContractGap]

    def url(self, name: str) -> str:
        """Base URL of a service."""
        return self.services[name].url

    def get(self, name: str, path: str, **kwargs: Any) -> Any:
        """GET a JSON document from a service."""
        if not self.services[name].http:  # no HTTP at all: the gap the lab noted at start
            gap = next((g for g in self.gaps if g.what == f"HTTP on the {name} service"),
                       ContractGap(f"HTTP on the {name} service", "none served"))
            raise MissingPath(f"GET {path}: the {name} service serves no HTTP", gap)
        # A total deadline: a service trickling its answer cannot hold the grade past it.
        r = http_session().get(self.url(name) + path, timeout=kwargs.pop("timeout", 10),
                               **kwargs)
        if r.status_code in (404, 405) and not path.startswith("/order/"):
            gap = ContractGap(f"GET {path} ({name})", f"answered {r.status_code}",
                              _BLOCKS.get(path, ()))
            if gap not in self.gaps:
                self.gaps.append(gap)
            raise MissingPath(f"{r.status_code} for GET {path} on the {name} service: the "
                              "contract's path is missing", gap, response=r)
        r.raise_for_status()
        return r.json()

    def place_order(self, user_id: str, items: list[dict[str, Any]],
                    session: requests.Session | None = None) -> requests.Response:
        """POST one order; return the raw response (201, 4xx or 503)."""
        http = session or http_session()
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
            # A list, maybe empty: zero orders wanted is an answer at once, not a time-out.
            return (notes,) if wanted <= {n["order_id"] for n in notes} else None

        def missing() -> str:
            seen = {n["order_id"] for n in self.notifications()}
            return f"missing: {sorted(wanted - seen)[:10]}"

        return wait_until(done, timeout, f"{len(wanted)} orders notified", detail=missing)[0]


# The run state each contract path feeds (a gap there leaves it unknown).
_BLOCKS = {"/orders": ("orders",), "/inventory": ("inventory",), "/reservations": ("ledger",),
           "/notifications": ("notifications",)}
