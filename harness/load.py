"""Drive load: place N orders at a steady rate and concurrency, with a reproducible item mix."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pandas as pd
import requests
from tqdm.auto import tqdm

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
        orders.append({"user_id": f"{spec.user_prefix}-{i % 50:02d}", "items": lines})
    return orders


def place_orders(order_url: str, spec: LoadSpec, *, t0: float | None = None) -> pd.DataFrame:
    """Place the spec's orders against `order_url` (the order service base URL).

    Returns one row per order: when it was sent and answered (seconds since t0, monotonic),
    the HTTP status, the order id if accepted, and how many attempts it took.
    """
    t0 = time.monotonic() if t0 is None else t0
    orders = order_mix(spec)
    start = time.monotonic()
    local = threading.local()
    bar = tqdm(total=len(orders), desc=spec.description, disable=not spec.progress, leave=False)
    bar_lock = threading.Lock()

    def session() -> requests.Session:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return local.session

    def place(i: int) -> dict[str, Any]:
        if spec.rate:
            # Open-loop pacing: order i is due at i/rate, whatever happened to earlier ones.
            due = start + i / spec.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        body = orders[i]
        sent = time.monotonic()
        attempts, status, answer, err = 0, None, None, None
        give_up = sent + spec.retry_unavailable_for
        while True:
            attempts += 1
            try:
                r = session().post(order_url + "/order", json=body, timeout=15)
                status, answer, err = r.status_code, r.json(), None
            except (requests.RequestException, ValueError) as exc:
                status, answer, err = None, None, exc.__class__.__name__
            retryable = status is None or status == 503
            if not retryable or time.monotonic() >= give_up:
                break
            time.sleep(min(0.2 * attempts, 1.0))
        answered = time.monotonic()
        with bar_lock:
            bar.update(1)
        return {
            "seq": i,
            "t_sent": sent - t0,
            "t_answered": answered - t0,
            "http_ms": (answered - sent) * 1000,
            "status": status,
            "accepted": status == 201,
            "order_id": answer.get("order_id") if status == 201 and answer else None,
            "created_at": answer.get("created_at") if status == 201 and answer else None,
            "user_id": body["user_id"],
            "items": body["items"],
            "attempts": attempts,
            "error": err or (answer.get("error") if isinstance(answer, dict) else None),
        }

    with ThreadPoolExecutor(max_workers=max(1, spec.concurrency)) as pool:
        rows = list(pool.map(place, range(len(orders))))
    bar.close()
    return pd.DataFrame(rows).sort_values("seq").reset_index(drop=True)
