"""The dual-write experiment: crash the order service between publishing an order and storing it.

The fault is timing-free. With the inventory stopped (so published events wait, visibly, in
`order_placed`), the harness holds a write lock on the order service's SQLite file, so that
every POST /order stops at its first write, and then kills the order service with SIGKILL:

- `direct` (publish, confirm, then store): each POST has published its event before it
  reaches the lock, so every event is on the queue and no order is stored: a *ghost*.
- `outbox` (order and event in one transaction first): each POST stops at the transaction;
  nothing is published, nothing is stored, nothing happens.

Then the lock goes, the order service and the inventory come back, and each client, having had
no answer, tries once more (as a client without an Idempotency-Key does). The counts follow
harness.chaos.check: a ghost is processed but not known to the order service (GET 404); lost is
accepted (201/202) but never notified; a duplicate is one client request that became more than
one processed order.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from harness import amqp
from harness.lab import Lab
from harness.waiting import wait_until
from lab_services import topology

DESIGNS = ("direct", "outbox")
PIZZA = [{"item_id": "item_1", "quantity": 1, "price": 12.5}]


@dataclass
class CrashRun:
    """What one design did under the crash: counts, and what each client saw."""

    design: str
    clients: int
    published_before_crash: int = 0
    answers_before_crash: list[str] = field(default_factory=list)
    ghosts: int = 0
    lost: int = 0
    duplicates: int = 0
    processed: int = 0
    accepted: int = 0

    def counts(self) -> dict[str, int]:
        """The three failure counts, by name."""
        return {"ghosts": self.ghosts, "lost": self.lost, "duplicates": self.duplicates}


def order_db(lab: Lab) -> Path:
    """The order service's SQLite file (STORE_PATH's default under its data dir)."""
    return lab.workdir / "order" / "order.sqlite"


def hold_write_lock(path: Path) -> sqlite3.Connection:
    """Take SQLite's write lock on `path` and keep it until the connection is closed.

    Every other writer waits (the services' busy timeout is 30 s); readers go on (WAL).
    """
    if not path.is_file():  # connect() would make an empty file, and lock nothing that matters
        raise FileNotFoundError(f"{path}: no order database there (the lab's own services "
                                "keep it under their data dir)")
    db = sqlite3.connect(path, timeout=10, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    return db


def _post(url: str, user_id: str, out: dict[str, str]) -> None:
    try:
        r = requests.post(url, json={"user_id": user_id, "items": PIZZA}, timeout=60)
        out[user_id] = str(r.status_code)
    except requests.RequestException as exc:
        out[user_id] = f"no answer ({type(exc).__name__})"


def _events_waiting(lab: Lab) -> list[dict[str, Any]]:
    """The OrderPlaced events waiting in order_placed (read and put back)."""
    queued = amqp.read_queue(lab.amqp_url, topology.QUEUE_ORDER_PLACED)
    return [json.loads(m["body"]) for m in queued]


def crash_mid_order(lab: Lab, design: str, clients: int = 5, *,
                    window: float = 5.0, timeout: float = 60.0) -> CrashRun:
    """Run the crash against one design; return its counts (see the module docstring).

    Before the kill the harness watches the queue: `direct` puts the `clients` events there
    at once (the kill comes then, or after `timeout` at the latest, on a very busy machine);
    `outbox` never publishes one, so it is watched for `window` seconds.
    """
    if design not in DESIGNS:
        raise ValueError(f"design must be one of {DESIGNS}, not {design!r}")
    env = {"ORDER_PUBLISH": design}
    run = CrashRun(design, clients)
    tag = f"dw-{design}-{time.monotonic_ns() % 10**8}"
    users = [f"{tag}-{i}" for i in range(clients)]
    lab.restart("order", env=env)
    lab.stop("inventory")  # events wait in order_placed, where the harness can see them
    waiting_before = amqp.depth(lab.amqp_url, topology.QUEUE_ORDER_PLACED)
    lock = hold_write_lock(order_db(lab))
    answers: dict[str, str] = {}
    try:
        url = lab.url("order") + "/order"
        threads = [threading.Thread(target=_post, args=(url, u, answers), daemon=True)
                   for u in users]
        for t in threads:
            t.start()
        # Until every client's event is on the queue (direct), or the window ends (outbox).
        deadline = time.monotonic() + (timeout if design == "direct" else window)
        while (time.monotonic() < deadline
               and amqp.depth(lab.amqp_url, topology.QUEUE_ORDER_PLACED)
               < waiting_before + clients):
            time.sleep(0.05)
        answered_early = dict(answers)
        lab.kill("order")  # SIGKILL: no answer, no clean-up, as a crash
        for t in threads:
            t.join(timeout)
    finally:
        lock.rollback()
        lock.close()
    run.answers_before_crash = [answers.get(u, "no answer") for u in users]
    if answered_early:
        raise RuntimeError(f"requests answered before the crash: {answered_early}; "
                           "the lock did not hold them")
    # Whose order each waiting event is: the clients never heard of these order ids.
    owner = {e["order_id"]: e["user_id"] for e in _events_waiting(lab)
             if e.get("user_id") in set(users)}
    run.published_before_crash = len(owner)
    # Recovery: the order service and the inventory come back; each client tries once more.
    lab.start_service("order", env=env)
    lab.start_service("inventory")
    retried: dict[str, str] = {}
    accepted_ids: dict[str, str] = {}
    for u in users:
        r = requests.post(lab.url("order") + "/order", json={"user_id": u, "items": PIZZA},
                          timeout=30)
        retried[u] = str(r.status_code)
        if r.status_code in (201, 202):
            accepted_ids[r.json()["order_id"]] = u
    owner.update(accepted_ids)
    run.accepted = len(accepted_ids)
    # Wait (bounded) until everything published is processed: each accepted order notified,
    # and order_placed empty.
    lab.wait_notified(accepted_ids, timeout=timeout)
    wait_until(lambda: amqp.depth(lab.amqp_url, topology.QUEUE_ORDER_PLACED) == 0, timeout,
               "order_placed to drain")
    processed = _processed_orders(lab, owner)
    run.processed = len(processed)
    notified = {n["order_id"] for n in lab.notifications()}
    run.lost = sum(1 for o in accepted_ids if o not in notified)
    known = {o: requests.get(f"{lab.url('order')}/order/{o}", timeout=10).status_code == 200
             for o in processed}
    run.ghosts = sum(1 for ok in known.values() if not ok)
    per_client: dict[str, int] = {}
    for user in processed.values():
        per_client[user] = per_client.get(user, 0) + 1
    run.duplicates = sum(1 for n in per_client.values() if n > 1)
    return run


def _processed_orders(lab: Lab, owner: dict[str, str]) -> dict[str, str]:
    """Order id -> user id of each order in `owner` that the inventory gave an outcome."""
    outcomes = lab.reservations().get("outcomes", [])
    return {row["order_id"]: owner[row["order_id"]] for row in outcomes
            if row["order_id"] in owner}
