"""Drive load: place N orders at a steady rate and concurrency, with a reproducible item mix.

The client behaves as a real one does when asked to: it sends an `Idempotency-Key` per
order and keeps it across retries, retries 503s and connection errors, confirms a 202 by
reading the order back, and gives up after a bound on attempts and on time.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pandas as pd
import requests
from tqdm.auto import tqdm

from harness.lab.deadline import DeadlineSession
from lab_services.store import DEFAULT_CATALOGUE

# Items whose default stock makes an ordinary run succeed; the lab's failures are deliberate.
DEFAULT_ITEMS = ("item_1", "item_2", "item_3", "item_4", "item_5")


@dataclass
class LoadSpec:
    """What load to drive: how many orders, how fast, how parallel, and from which seed."""

    orders: int = 200
    rate: float | None = None  # orders per second; None = as fast as the workers go
    concurrency: int = 4
    seed: int = 42
    max_lines: int = 2
    max_quantity: int = 2
    items: tuple[str, ...] = DEFAULT_ITEMS
    user_prefix: str = "student"
    retry_unavailable_for: float = 0.0  # seconds to keep retrying a 503 / refused connection
    max_attempts: int = 200  # a second bound on retries, whatever the time bound
    idempotency_key: bool = False  # send an Idempotency-Key header, the same on every retry
    unique_users: bool = False  # one user id per order, to tell orders apart on the server
    confirm_accepted: bool = False  # on 202, read the order back (GET /order/<id>)
    timeout_s: float = 15.0  # per HTTP request
    progress: bool = True
    description: str = "placing orders"


def order_mix(spec: LoadSpec) -> list[dict[str, Any]]:
    """The orders a spec places, in order: the same seed gives the same orders."""
    rng = random.Random(spec.seed)
    orders = []
    for i in range(spec.orders):
        chosen = rng.sample(spec.items, k=rng.randint(1, min(spec.max_lines, len(spec.items))))
        lines = [{"item_id": item, "quantity": rng.randint(1, spec.max_quantity),
                  "price": DEFAULT_CATALOGUE.get(item, ("", 0, 1.0))[2]} for item in chosen]
        user = (f"{spec.user_prefix}-{spec.seed}-{i:06d}" if spec.unique_users
                else f"{spec.user_prefix}-{i % 50:02d}")
        orders.append({"user_id": user, "items": lines})
    return orders


def _backoff(attempt: int) -> float:
    return min(0.2 * attempt, 1.0)


def _confirm(session: requests.Session, order_url: str, order_id: str, spec: LoadSpec,
             give_up: float) -> int | None:
    """Read an order answered 202 back until the service knows it; the last GET status."""
    status: int | None = None
    for attempt in range(1, spec.max_attempts + 1):
        try:
            status = session.get(f"{order_url}/order/{order_id}", timeout=spec.timeout_s
                                 ).status_code
        except requests.RequestException:
            status = None
        if status == 200 or time.monotonic() >= give_up:
            break
        time.sleep(_backoff(attempt))
    return status


def place_orders(order_url: str, spec: LoadSpec, *, t0: float | None = None,
                 on_accepted: Callable[[dict[str, Any]], None] | None = None,
                 stop: threading.Event | None = None) -> pd.DataFrame:
    """Place the spec's orders against `order_url` (the order service base URL).

    Returns one row per order: when it was sent and answered (seconds since t0, monotonic),
    the HTTP status of every attempt, the order id if accepted (201 or 202), and how many
    attempts it took. `on_accepted` is called (from a worker thread) with each accepted
    order's body, the first time it is accepted. Once `stop` is set, no order is sent and
    none is retried any more (those rows say "stopped").
    """
    t0 = time.monotonic() if t0 is None else t0
    halt = stop or threading.Event()
    orders = order_mix(spec)
    start = time.monotonic()
    local = threading.local()
    bar = tqdm(total=len(orders), desc=spec.description, disable=not spec.progress, leave=False)
    bar_lock = threading.Lock()

    def session() -> requests.Session:
        if not hasattr(local, "session"):
            # timeout_s bounds each request all told: a trickling answer cannot hold a worker.
            local.session = DeadlineSession()
        return local.session

    def place(i: int) -> dict[str, Any]:
        if spec.rate:
            # Open-loop pacing: order i is due at i/rate, whatever happened to earlier ones.
            due = start + i / spec.rate
            delay = due - time.monotonic()
            if delay > 0:
                halt.wait(delay)
        body = orders[i]
        key = uuid.uuid4().hex if spec.idempotency_key else None
        headers = {"Idempotency-Key": key} if key else {}
        sent = time.monotonic()
        attempts, status, answer, err = 0, None, None, None
        statuses: list[int | None] = []
        order_ids: list[str] = []
        give_up = sent + spec.retry_unavailable_for
        while not halt.is_set():
            attempts += 1
            try:
                r = session().post(order_url + "/order", json=body, headers=headers,
                                   timeout=spec.timeout_s)
                status, err = r.status_code, None
                try:
                    answer = r.json()
                except ValueError:
                    answer, err = None, "answer not JSON"
            except requests.RequestException as exc:
                status, answer, err = None, None, exc.__class__.__name__
            statuses.append(status)
            if status in (201, 202) and isinstance(answer, dict) and answer.get("order_id"):
                if not order_ids and on_accepted is not None:
                    on_accepted(answer)
                if answer["order_id"] not in order_ids:
                    order_ids.append(answer["order_id"])
            # 503: the broker cannot take it now; 409: an earlier attempt with this key is
            # still in progress (its answer was lost to a timeout). Both say: try again.
            retryable = status is None or status in (503, 409)
            if not retryable or time.monotonic() >= give_up or attempts >= spec.max_attempts:
                break
            halt.wait(_backoff(attempts))
        confirmed = None
        if status == 202 and spec.confirm_accepted and order_ids:
            confirmed = _confirm(session(), order_url, order_ids[-1], spec,
                                 max(give_up, time.monotonic() + spec.timeout_s))
        answered = time.monotonic()
        accepted = bool(order_ids)
        last = answer if isinstance(answer, dict) else {}
        with bar_lock:
            bar.update(1)
        return {
            "seq": i,
            "t_sent": sent - t0,
            "t_answered": answered - t0,
            "http_ms": (answered - sent) * 1000,
            "status": status,
            "accepted": accepted,  # 201, or 202: stored in the outbox, published later
            "order_id": order_ids[0] if accepted else None,
            "created_at": last.get("created_at") if accepted else None,
            "user_id": body["user_id"],
            "items": body["items"],
            "attempts": attempts,
            "statuses": " ".join("-" if s is None else str(s) for s in statuses),
            "order_ids": " ".join(order_ids),
            "idempotency_key": key,
            "confirmed_status": confirmed,
            "error": err or last.get("error") or ("stopped" if not attempts else None),
        }

    with ThreadPoolExecutor(max_workers=max(1, spec.concurrency)) as pool:
        rows = list(pool.map(place, range(len(orders))))
    bar.close()
    return pd.DataFrame(rows).sort_values("seq").reset_index(drop=True)


class BackgroundLoad:
    """`place_orders` on a thread of its own; `stop()` ends its sending and retrying and
    joins it. A scenario that raises midway must not leave a loader behind: it would keep
    retrying for a minute and place orders into the next scenario's services (fixed ports
    are the same ones there)."""

    def __init__(self, place: Callable[[threading.Event], pd.DataFrame]) -> None:
        self._stop = threading.Event()
        self._box: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._run, args=(place,), name="load",
                                        daemon=True)

    def _run(self, place: Callable[[threading.Event], pd.DataFrame]) -> None:
        try:
            self._box["load"] = place(self._stop)
        except BaseException as exc:  # re-raised by join(), in the scenario's thread
            self._box["error"] = exc

    def start(self) -> BackgroundLoad:
        """Start placing orders."""
        self._thread.start()
        return self

    def join(self) -> pd.DataFrame:
        """Wait for every order to be placed (or given up) and return the rows."""
        self._thread.join()
        if "error" in self._box:
            raise self._box["error"]
        return self._box["load"]

    def stop(self) -> None:
        """Stop sending and retrying, and wait for the thread to end."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
