"""Group commit on the order path, on a real broker (issue 21, item 2).

Concurrent POSTs share a store transaction and the broker's confirms, with the same
promise as before: a 201 means the order is stored and its event confirmed. Speed is
measured by `python -m harness bench`, never here.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from harness import amqp
from harness.waiting import wait_until
from lab_services import topology as topo

pytestmark = pytest.mark.broker

ITEMS = [{"item_id": "item_1", "quantity": 1}]


def _post(url: str, user: str, key: str | None = None) -> requests.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return requests.post(url + "/order", json={"user_id": user, "items": ITEMS},
                         headers=headers, timeout=30)


def _marked_sent(lab) -> bool:
    return lab.get("order", "/health")["outbox_unsent"] == 0


def test_concurrent_posts_are_all_stored_and_each_event_published_once(make_lab):
    lab = make_lab(initial_stock="100000")
    lab.stop("inventory")  # the events stay in order_placed, to be counted
    url = lab.url("order")
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: _post(url, f"u{i % 5}"), range(64)))
    assert [r.status_code for r in answers] == [201] * 64
    ids = sorted(r.json()["order_id"] for r in answers)
    assert len(set(ids)) == 64
    assert sorted(o["order_id"] for o in lab.orders()) == ids
    # Once every confirmed event is marked sent, the relay has nothing left to publish:
    # the queue then holds each order's event exactly once.
    wait_until(lambda: _marked_sent(lab), 30, "every event marked sent")
    events = amqp.read_queue(lab.amqp_url, topo.QUEUE_ORDER_PLACED)
    assert sorted(m["correlation_id"] for m in events) == ids
    health = lab.get("order", "/health")
    assert health["grouped_orders"] == 64 and 1 <= health["group_commits"] <= 64
    lab.start_service("inventory")
    lab.wait_notified(ids, 60)


def test_concurrent_retries_with_one_key_make_one_order_and_one_event(make_lab):
    lab = make_lab()
    lab.stop("inventory")
    url = lab.url("order")
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: _post(url, "same", key="k-group"), range(16)))
    statuses = {r.status_code for r in answers}
    assert statuses <= {201, 409}, statuses  # 409: the same key still in progress
    assert len({r.json()["order_id"] for r in answers if r.status_code == 201}) == 1
    wait_until(lambda: _marked_sent(lab), 30, "every event marked sent")
    assert amqp.depth(lab.amqp_url, topo.QUEUE_ORDER_PLACED) == 1
    assert len(lab.orders()) == 1


def test_kill_9_during_groups_loses_no_order_answered_201(make_lab):
    lab = make_lab(initial_stock="100000")
    url = lab.url("order")
    answered: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(i: int) -> None:
        with requests.Session() as http:
            while not stop.is_set():
                try:
                    r = http.post(url + "/order", json={"user_id": f"k{i}", "items": ITEMS},
                                  timeout=10)
                except requests.RequestException:
                    continue  # the service is gone: no answer, no promise
                if r.status_code == 201:
                    with lock:
                        answered.append(r.json()["order_id"])

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(12)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(answered) >= 60, 60, "orders answered 201 before the kill")
        lab.kill("order")  # SIGKILL while groups are being committed and confirmed
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    promised = list(answered)
    lab.start_service("order")
    stored = {o["order_id"] for o in lab.orders()}
    assert not set(promised) - stored, "orders answered 201 and then lost"
    lab.wait_notified(promised, 90)
