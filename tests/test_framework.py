"""The exercise framework (exercises/inventory/framework.py) on a real broker.

Two defects of issue 18 (item 6), each shown with the situation that exposed it:
- after a publisher nack it reconnected without closing the old connection, so the orders
  prefetched on it stayed unacked (out of every consumer's reach) for minutes;
- its /health answered 200 after the consumer thread had died.
The reference answer (solutions/inventory) runs this same framework.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from harness.amqp import Publisher, order_copy
from harness.brokers import management
from harness.waiting import wait_until
from lab_services import events, topology

pytestmark = pytest.mark.broker

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = ROOT / "solutions" / "inventory" / "impl.toml"
ORDERS = 30  # more than the framework's prefetch (20): some wait in the queue


def _api(broker, method: str, path: str, **kwargs):
    r = requests.request(method, broker.management_url.rstrip("/") + "/api" + path,
                         auth=tuple(broker.management_auth), timeout=10, **kwargs)
    r.raise_for_status()
    return r.json() if r.content else None


def _publish_orders(amqp_url: str, n: int) -> list[str]:
    publisher = Publisher(amqp_url)
    ids = []
    try:
        for i in range(n):
            event = events.order_placed(f"ORD-FW-{i:03d}", "u-1",
                                        (events.Item("item_1", 1, 1.0),))
            body, props = order_copy(event.payload)
            publisher.publish(body, props)
            ids.append(event.order_id)
    finally:
        publisher.close()
    return ids


def _connections(broker, vhost: str) -> int | None:
    try:
        return len(_api(broker, "GET", f"/vhosts/{quote(vhost, safe='')}/connections"))
    except requests.RequestException:
        return None


def test_after_a_nack_the_old_connection_is_closed_and_its_orders_go_to_the_new_one(
        broker, make_lab):
    lab = make_lab(impl=SOLUTION, services=["inventory"])
    inventory = lab.services["inventory"]
    vhost = quote(lab.vhost, safe="")
    # The broker nacks every publish that reaches order_status while this policy holds: the
    # inventory's first outcome is nacked, and it reconnects.
    _api(broker, "PUT", f"/policies/{vhost}/refuse-outcomes",
         json={"pattern": f"^{topology.QUEUE_ORDER_STATUS}$", "apply-to": "queues",
               "definition": {"max-length": 0, "overflow": "reject-publish"}})
    ids = _publish_orders(lab.amqp_url, ORDERS)
    wait_until(lambda: "NackError" in inventory.log_path.read_text(errors="replace"), 60,
               "the inventory to see a publisher nack", detail=inventory.log_tail)
    _api(broker, "DELETE", f"/policies/{vhost}/refuse-outcomes")

    def answered() -> list[str] | None:
        outcomes = lab.get("inventory", "/reservations")["outcomes"]
        done = sorted(o["order_id"] for o in outcomes)
        return done if done == ids else None

    # Old code: the orders prefetched on the abandoned connection stayed unacked for about
    # three minutes; here every order is answered once the nacks stop.
    wait_until(answered, 60, f"all {ORDERS} orders answered", detail=inventory.log_tail)
    wait_until(lambda: _connections(broker, lab.vhost) == 1, 30,
               "the inventory to hold exactly one connection",
               detail=lambda: str(_api(broker, "GET", f"/vhosts/{vhost}/connections")))

    def placed() -> dict:
        return next(q for q in management.queues(broker, lab.vhost)
                    if q["name"] == topology.QUEUE_ORDER_PLACED)

    # The management API's statistics lag by about a second: poll them.
    wait_until(lambda: (placed().get("messages_ready"), placed().get("messages_unacknowledged"),
                        placed().get("consumers")) == (0, 0, 1), 30,
               "order_placed empty, nothing unacked, one consumer", detail=lambda: str(placed()))
    assert lab.get("inventory", "/health")["status"] == "ok"


FORGOT_RETURN = '''
import sys
sys.path.insert(0, {framework_dir!r})
from framework import run


def handle_order(db, body):
    """A real mistake: the work is done, but the event is never returned."""
    db.execute("SELECT 1")


if __name__ == "__main__":
    run(handle_order)
'''


def test_health_answers_503_with_the_reason_once_the_consumer_thread_died(make_lab, tmp_path):
    (tmp_path / "inventory.py").write_text(FORGOT_RETURN.format(
        framework_dir=str(ROOT / "exercises" / "inventory")))
    (tmp_path / "impl.toml").write_text(
        'name = "forgot-return"\n[inventory]\ncommand = ["{python}", "inventory.py"]\n'
        'env = { AMQP_URL = "{amqp_url}", PORT = "{port}", DATA_DIR = "{data_dir}" }\n')
    lab = make_lab(impl=tmp_path / "impl.toml", services=["inventory"])
    inventory = lab.services["inventory"]
    assert requests.get(inventory.url + "/health", timeout=5).status_code == 200
    _publish_orders(lab.amqp_url, 1)  # the handler returns None: the framework cannot publish

    def unhealthy():
        # While the exception unwinds, /health briefly (and truly) says "reconnecting";
        # wait for the state the thread ends in.
        r = requests.get(inventory.url + "/health", timeout=5)
        stopped = r.status_code == 503 and "consumer thread stopped" in r.text
        return (r,) if stopped else None  # a 503 Response is falsy itself

    (r,) = wait_until(unhealthy, 30, "/health to answer 503: the consumer thread stopped",
                      detail=inventory.log_tail)
    body = r.json()
    assert body["status"] != "ok"
    assert "consumer thread stopped" in body["consumer"]
    assert "TypeError" in body["consumer"], body  # the handler's None, named
    assert inventory.running  # the process lives on; its health says it is of no use
    assert json.loads(r.text) == body  # standard JSON on the wire
