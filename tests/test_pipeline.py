"""The three services on a real broker: every endpoint, bad input, dead letters, duplicates,
insufficient stock, quorum queues and a broker restart."""

from __future__ import annotations

import json
import re

import pytest
import requests

from harness import amqp
from harness.brokers import management as admin
from harness.runner import order_event
from harness.waiting import wait_until
from lab_services import topology as topo

pytestmark = pytest.mark.broker

BURGERS = [{"item_id": "item_1", "quantity": 2, "price": 10.0}]


def place(lab, user="u1", items=BURGERS) -> dict:
    r = lab.place_order(user, items)
    assert r.status_code == 201, r.text
    return r.json()


def barrier(lab) -> str:
    """Place one order and wait until it is notified: everything queued before it is done."""
    order = place(lab, "sentinel", [{"item_id": "item_5", "quantity": 1, "price": 2.0}])
    lab.wait_notified([order["order_id"]], 30)
    return order["order_id"]


def test_an_order_travels_through_every_service(lab):
    order = place(lab)
    assert re.fullmatch(r"ORD-\d{8}-[0-9a-f]{8}", order["order_id"])
    assert order["status"] == "PENDING" and order["total_amount"] == 20.0
    assert order["items"] == BURGERS and order["created_at"]

    notes = lab.wait_notified([order["order_id"]], 30)
    note = next(n for n in notes if n["order_id"] == order["order_id"])
    assert note["status"] == "RESERVED"

    status = wait_until(lambda: (o := lab.get("order", f"/order/{order['order_id']}"))
                        and o.get("status") == "RESERVED" and o, 30, "status RESERVED")
    assert status["order_id"] == order["order_id"]
    assert [o["order_id"] for o in lab.orders()] == [order["order_id"]]
    inventory = lab.inventory()
    assert inventory["item_1"] == {"name": "Burger", "stock": 98, "price": 10.0, "initial": 100}
    assert inventory["item_2"]["stock"] == 50 and inventory["item_3"]["stock"] == 75
    health = {name: lab.get(name, "/health") for name in lab.services}
    assert health["inventory"]["processed_orders"] == 1
    assert all(h["status"] == "ok" and h["broker"] == "connected" for h in health.values())


def test_notifications_come_oldest_first(lab):
    ids = [place(lab, f"u{i}")["order_id"] for i in range(5)]
    notes = lab.wait_notified(ids, 30)
    assert [n["order_id"] for n in notes] == ids


def test_the_published_event_keeps_the_original_wire_contract(lab):
    # Bind a spy queue the way the original lab's tools do, then place an order.
    with amqp.channel(lab.amqp_url) as ch:
        ch.queue_declare("spy", exclusive=False, auto_delete=False)
        ch.queue_bind("spy", topo.ORDER_EVENTS, "order.placed")
        order = place(lab)
        method, props, body = wait_until(lambda: (m := ch.basic_get("spy", auto_ack=True))[0]
                                         and m, 10, "the spy copy")
    event = json.loads(body)
    assert {"event_id", "event_type", "timestamp", "order_id", "user_id", "items",
            "total_amount"} <= set(event)
    assert event["event_type"] == "OrderPlaced" and event["order_id"] == order["order_id"]
    assert props.message_id == event["event_id"] and props.correlation_id == order["order_id"]
    assert props.delivery_mode == 2 and method.routing_key == "order.placed"


@pytest.mark.parametrize(("kwargs", "status", "field"), [
    ({"json": {"items": BURGERS}}, 400, "user_id"),
    ({"json": {"user_id": "u1"}}, 400, "items"),
    ({"json": {"user_id": "u1", "items": []}}, 400, "items"),
    ({"json": {"user_id": "u1", "items": [{"item_id": "item_1", "quantity": 0,
                                           "price": 1}]}}, 400, "items[0].quantity"),
    ({"json": {"user_id": "u1", "items": [{"item_id": "item_1", "quantity": -3,
                                           "price": 1}]}}, 400, "items[0].quantity"),
    ({"json": {"user_id": "u1", "items": [{"item_id": "item_1", "quantity": 1,
                                           "price": -1}]}}, 400, "items[0].price"),
    ({"data": "{not json", "headers": {"Content-Type": "application/json"}}, 400, "body"),
    ({"data": "user_id=u1", "headers": {"Content-Type": "text/plain"}}, 415, "body"),
    ({"data": json.dumps({"user_id": "u" * 70_000, "items": BURGERS}),
      "headers": {"Content-Type": "application/json"}}, 413, None),
])
def test_bad_orders_get_a_json_4xx_and_publish_nothing(lab, kwargs, status, field):
    r = requests.post(lab.url("order") + "/order", timeout=10, **kwargs)
    assert r.status_code == status
    assert r.headers["Content-Type"].startswith("application/json")
    assert "error" in r.json()
    if field:
        assert r.json()["field"] == field and field in r.json()["error"]
    barrier(lab)
    assert lab.get("inventory", "/health")["processed_orders"] == 1  # only the barrier
    assert len(lab.orders()) == 1
    assert amqp.read_queue(lab.amqp_url, topo.DLQ) == []


def test_unknown_order_is_a_json_404(lab):
    r = requests.get(lab.url("order") + "/order/ORD-19990101-deadbeef", timeout=10)
    assert r.status_code == 404 and "not found" in r.json()["error"]


@pytest.mark.parametrize("raw, reason", [
    ("not valid json at all", "body: not valid JSON"),
    ('{"event_type":"OrderPlaced","user_id":"x"}', "event_id: missing"),
])
def test_malformed_message_goes_to_dlq_with_reason_and_pipeline_goes_on(lab, raw, reason):
    amqp.publish_raw(lab.amqp_url, raw, exchange=topo.ORDER_EVENTS, routing_key="order.placed")
    barrier(lab)  # a valid order published after the bad one still flows
    dead = amqp.read_queue(lab.amqp_url, topo.DLQ)
    assert len(dead) == 1
    assert dead[0]["body"] == raw and dead[0]["reason"].startswith(reason)
    assert dead[0]["original_queue"] == topo.QUEUE_ORDER_PLACED
    assert lab.get("inventory", "/health")["processed_orders"] == 1


@pytest.mark.parametrize(("mode", "times_reserved"), [("sqlite", 1), ("off", 3)])
def test_duplicated_order_placed_reserves_once_only_in_sqlite_mode(make_lab, mode,
                                                                   times_reserved):
    lab = make_lab(idempotency=mode)
    order = place(lab)
    lab.wait_notified([order["order_id"]], 30)
    full = lab.get("order", f"/order/{order['order_id']}")
    # A redelivery (same event_id) and a hand-made republish (new event_id, same order).
    amqp.republish_order(lab.amqp_url, order_event(full), same_event_id=True)
    amqp.republish_order(lab.amqp_url, order_event(full), same_event_id=False)
    barrier(lab)
    ledger = lab.reservations()["reservations"]
    assert sum(1 for r in ledger if r["order_id"] == order["order_id"]) == times_reserved
    assert lab.inventory()["item_1"]["stock"] == 100 - 2 * times_reserved
    # Whatever the inventory did, the customer hears about the order once.
    assert [n["order_id"] for n in lab.notifications()].count(order["order_id"]) == 1


def test_insufficient_stock_fails_the_order_and_says_so(make_lab):
    lab = make_lab(initial_stock="item_1=1,item_2=50")
    order = place(lab, items=[{"item_id": "item_1", "quantity": 2, "price": 10.0},
                              {"item_id": "item_2", "quantity": 1, "price": 15.0}])
    unknown = place(lab, items=[{"item_id": "item_404", "quantity": 1, "price": 1.0}])
    notes = {n["order_id"]: n for n in lab.wait_notified([order["order_id"],
                                                          unknown["order_id"]], 30)}
    assert notes[order["order_id"]]["status"] == "FAILED"
    assert "insufficient stock for item_1" in notes[order["order_id"]]["reason"]
    assert "unknown item: item_404" in notes[unknown["order_id"]]["reason"]
    # All or nothing: item_2 was not taken either.
    assert lab.inventory()["item_1"]["stock"] == 1 and lab.inventory()["item_2"]["stock"] == 50
    status = wait_until(lambda: (o := lab.get("order", f"/order/{order['order_id']}"))
                        and o.get("status") == "FAILED" and o, 30, "status FAILED")
    assert "insufficient stock" in status["reason"]


def test_quorum_queues_work_end_to_end(make_lab):
    lab = make_lab(queue_type="quorum")
    queues = {q["name"]: q for q in admin.queues(lab.broker, lab.vhost)}
    assert queues[topo.QUEUE_ORDER_PLACED]["type"] == "quorum"
    order = place(lab)
    amqp.publish_raw(lab.amqp_url, "not valid json at all")
    lab.wait_notified([order["order_id"]], 30)
    dead = wait_until(lambda: amqp.read_queue(lab.amqp_url, topo.DLQ), 30, "a dead letter")
    assert dead[0]["reason"].startswith("body: not valid JSON")


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_poison_order_is_retried_with_backoff_then_dead_lettered(make_lab, queue_type):
    lab = make_lab(extra_env={"LAB_FAIL_USER": "poison"}, queue_type=queue_type)
    poison = place(lab, "poison")
    fine = place(lab, "fine")
    lab.wait_notified([fine["order_id"]], 30)  # the poison message does not block the queue
    dead = wait_until(lambda: amqp.read_queue(lab.amqp_url, topo.DLQ), 30, "the poison in dlq")
    assert json.loads(dead[0]["body"])["order_id"] == poison["order_id"]
    assert dead[0]["attempts"] == len(topo.RETRY_DELAYS_MS) + 1
    assert "simulated persistent failure" in dead[0]["reason"]
    assert poison["order_id"] not in {n["order_id"] for n in lab.notifications()}


@pytest.mark.slow
@pytest.mark.parametrize("publish", ["outbox", "direct"])
def test_services_reconnect_after_a_broker_restart(make_lab, broker, publish):
    lab = make_lab(extra_env={"ORDER_PUBLISH": publish})
    before = place(lab)
    lab.wait_notified([before["order_id"]], 30)
    pids = {name: svc.proc.pid for name, svc in lab.services.items()}
    broker.kill()
    r = lab.place_order("u1", BURGERS)
    if publish == "outbox":
        # Safe on disk, published once the broker is back: accepted, not confirmed.
        assert r.status_code == 202, r.text
        during = [r.json()["order_id"]]
    else:
        assert r.status_code == 503 and "unavailable" in r.json()["error"]
        during = []
    broker.restart()
    for svc in lab.services.values():
        svc.wait_healthy(60)
    assert {name: svc.proc.pid for name, svc in lab.services.items()} == pids
    after = [place(lab, f"after{i}")["order_id"] for i in range(5)]
    lab.wait_notified(after + during, 30)
    assert all(lab.get(name, "/health")["reconnects"] >= 1 for name in lab.services)
    # outbox: the order taken during the outage was published; direct: the refused one
    # was never accepted.
    assert len(lab.orders()) == 6 + len(during)
