"""Hostile input and broken peers, on a real broker: each case here once broke the services.

HTTP bodies get a JSON 4xx naming the field and change nothing; AMQP messages that pika
cannot re-encode, that kill the process, or that no queue takes never wedge a consumer and
never count as delivered; the order service's dual write is closed by the outbox.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import struct
import time
from urllib.parse import quote

import pika
import psutil
import pytest
import requests

from harness import amqp
from harness.brokers import management as admin
from harness.waiting import wait_until
from lab_services import events
from lab_services import topology as topo
from lab_services.headers import H_REASON

pytestmark = pytest.mark.broker

BURGERS = [{"item_id": "item_1", "quantity": 2, "price": 10.0}]
GOOD = {"user_id": "u1", "items": BURGERS}


def post(lab, body, *, raw: bytes | None = None, headers=None, timeout=15):
    url = lab.url("order") + "/order"
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    data = raw if raw is not None else json.dumps(body, ensure_ascii=False).encode()
    return requests.post(url, data=data, headers=hdrs, timeout=timeout)


def line(**over):
    return {"user_id": "u1", "items": [{"item_id": "item_1", "quantity": 1, "price": 1.0,
                                        **over}]}


HOSTILE_BODIES = {
    "quantity 1e308": (None, b'{"user_id":"u1","items":[{"item_id":"item_1","quantity":1e308,'
                             b'"price":10}]}', "items[0].quantity"),
    "quantity 10**308": (None, ('{"user_id":"u1","items":[{"item_id":"item_1","quantity":'
                                + "1" + "0" * 308 + ',"price":10}]}').encode(),
                         "items[0].quantity"),
    "quantity 10**400": (None, ('{"user_id":"u1","items":[{"item_id":"item_1","quantity":'
                                + "1" + "0" * 400 + ',"price":10}]}').encode(),
                         "items[0].quantity"),
    "quantity over the maximum": (line(quantity=events.MAX_QUANTITY + 1), None,
                                  "items[0].quantity"),
    "30,000-deep nesting": (None, b'{"user_id":"u1","items":' + b"[" * 30_000
                            + b"]" * 30_000 + b"}", "body"),
    "NaN literal": (None, b'{"user_id":"u1","items":[{"item_id":"item_1","quantity":1,'
                          b'"price":NaN}]}', "body"),
    "60 KB emoji user_id": ({"user_id": "\U0001F354" * 15_000, "items": BURGERS}, None,
                            "user_id"),
    "65-character user_id": ({"user_id": "u" * 65, "items": BURGERS}, None, "user_id"),
    "65-character item_id": (line(item_id="i" * 65), None, "items[0].item_id"),
    "control character id": ({"user_id": "u\x00", "items": BURGERS}, None, "user_id"),
    "price infinity as a huge number": (None, b'{"user_id":"u1","items":[{"item_id":"item_1",'
                                              b'"quantity":1,"price":1e400}]}', "body"),
    "not an object": ([1, 2, 3], None, "body"),
    "empty body": (None, b"", "body"),
    "invalid UTF-8": (None, b'{"user_id":"\xff\xfe","items":[]}', "body"),
}


def test_hostile_http_bodies_get_a_json_4xx_naming_the_field_and_change_nothing(lab):
    for name, (body, raw, field) in HOSTILE_BODIES.items():
        r = post(lab, body, raw=raw)
        assert 400 <= r.status_code < 500, f"{name}: {r.status_code} {r.text[:200]}"
        answer = r.json()
        assert answer["field"] == field, f"{name}: {answer}"
        assert len(answer["error"]) < 300, f"{name}: the error echoes the input"
    big = post(lab, None, raw=b'{"user_id":"' + b"a" * 200_000 + b'"}')
    assert big.status_code == 413 and big.json()["field"] == "body"
    wrong_type = requests.post(lab.url("order") + "/order", data="user_id=u1", timeout=15,
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert wrong_type.status_code == 415 and wrong_type.json()["field"] == "body"
    assert lab.orders() == []
    assert amqp.depth(lab.amqp_url, topo.QUEUE_ORDER_PLACED) == 0
    assert lab.get("inventory", "/health")["processed_orders"] == 0
    # A long unknown id on GET is not echoed back whole.
    r = requests.get(lab.url("order") + "/order/" + "x" * 5000, timeout=15)
    assert r.status_code == 404 and len(r.text) < 400


def test_the_same_idempotency_key_gives_the_same_order_and_one_event(lab):
    key = {"Idempotency-Key": "retry-me-1"}
    first = post(lab, GOOD, headers=key)
    again = post(lab, GOOD, headers=key)
    assert first.status_code == 201 and again.status_code in (200, 201), again.text
    assert again.json()["order_id"] == first.json()["order_id"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    other = post(lab, {**GOOD, "user_id": "u2"}, headers=key)
    assert other.status_code == 422 and other.json()["field"] == "Idempotency-Key"
    bad_key = post(lab, GOOD, headers={"Idempotency-Key": "k" * 200})
    assert bad_key.status_code == 400 and bad_key.json()["field"] == "Idempotency-Key"
    lab.wait_notified([first.json()["order_id"]], 30)
    assert len(lab.orders()) == 1
    assert lab.get("inventory", "/health")["processed_orders"] == 1
    assert len(lab.reservations()["reservations"]) == 1


@contextlib.contextmanager
def doubles_on_the_wire():
    """Let pika send float headers as AMQP doubles ('d'), which other clients do."""
    original = pika.data.encode_value

    def encode(pieces, value):
        if isinstance(value, float):
            pieces.append(struct.pack(">cd", b"d", value))
            return 9
        return original(pieces, value)

    pika.data.encode_value = encode
    try:
        yield
    finally:
        pika.data.encode_value = original


def _dlq_reasons(lab) -> list[str]:
    return [m["reason"] or "" for m in amqp.read_queue(lab.amqp_url)]


def test_a_header_pika_cannot_re_encode_does_not_wedge_the_consumer(make_lab):
    # A small prefetch: before the fix, each such message left an input that was never
    # settled, and the consumer stopped once prefetch of them had piled up.
    lab = make_lab(prefetch=3)
    props = pika.BasicProperties(delivery_mode=2, headers={"float": 1e30, "nested": {"d": 2.5}})
    with doubles_on_the_wire():  # as a Java or Go client would send them
        for i in range(6):
            amqp.publish_raw(lab.amqp_url, f"not json {i}", properties=props)
    order = post(lab, GOOD)
    assert order.status_code == 201
    lab.wait_notified([order.json()["order_id"]], 30)
    wait_until(lambda: len(_dlq_reasons(lab)) == 6, 30, "six malformed messages in the DLQ")
    assert all("not valid JSON" in r for r in _dlq_reasons(lab))


def test_a_far_future_timestamp_header_does_not_kill_the_connection(lab):
    class FarFuture(dt.datetime):
        def utctimetuple(self):
            return time.struct_time((9999, 1, 10 ** 12, 0, 0, 0, 0, 1, 0))

    event = json.loads(events.order_placed("ORD-20260101-0000far1", "u1",
                                           events.validate_items(BURGERS)).to_json())
    amqp.publish_raw(lab.amqp_url, json.dumps(event),
                     properties=pika.BasicProperties(delivery_mode=2,
                                                     headers={"sent": FarFuture(2000, 1, 1)}))
    lab.wait_notified([event["order_id"]], 30)
    order = post(lab, GOOD)
    lab.wait_notified([order.json()["order_id"]], 30)
    assert lab.get("inventory", "/health")["reconnects"] == 0


def test_an_unroutable_order_is_not_answered_201(make_lab):
    for publish, refused in (("outbox", 202), ("direct", 503)):
        lab = make_lab(extra_env={"ORDER_PUBLISH": publish})
        lab.stop("inventory")  # nobody left to declare the queue again
        admin._api(lab.broker, "DELETE", f"/queues/{lab.vhost}/{topo.QUEUE_ORDER_PLACED}")
        r = post(lab, GOOD)
        assert r.status_code == refused, f"{publish}: {r.status_code} {r.text}"
        lab.start_service("inventory")  # declares order_placed again
        if publish == "outbox":  # stored, so the relay publishes it once it is routable
            lab.wait_notified([r.json()["order_id"]], 30)
        else:
            assert lab.orders() == []


def test_a_blocked_broker_gets_an_answer_at_once_not_a_timeout(make_lab, broker):
    if not broker.can_stop:
        pytest.skip("needs a broker whose memory alarm we can set")
    for publish, refused in (("outbox", 202), ("direct", 503)):
        # A long confirm timeout: waiting for it would exceed the client's 10 s.
        lab = make_lab(extra_env={"ORDER_PUBLISH": publish, "CONFIRM_TIMEOUT": "60"})
        warm = post(lab, GOOD)
        assert warm.status_code == 201
        broker.rabbitmqctl("set_vm_memory_high_watermark", "0.0000001")
        try:
            # The broker tells a connection it is blocked when it next publishes: the first
            # order learns it mid-wait, the second before publishing.
            first = post(lab, GOOD, timeout=10)
            r = post(lab, GOOD, timeout=10)
            assert (first.status_code, r.status_code) == (refused, refused), r.text
            assert lab.get("order", "/health")["broker_blocked"] is True
        finally:
            broker.rabbitmqctl("set_vm_memory_high_watermark", "0.4")
        if publish == "outbox":
            lab.wait_notified([first.json()["order_id"], r.json()["order_id"]], 60)


def test_a_message_that_kills_the_process_is_dead_lettered_after_the_delivery_limit(make_lab):
    lab = make_lab(extra_env={"DELIVERY_LIMIT": "3",
                              "LAB_CRASH_AT": "before_commit:ORD-20260101-00000k11"})
    inv = lab.services["inventory"]
    event = json.loads(events.order_placed("ORD-20260101-00000k11", "u1",
                                           events.validate_items(BURGERS)).to_json())
    amqp.publish_raw(lab.amqp_url, json.dumps(event),
                     properties=pika.BasicProperties(delivery_mode=2,
                                                     message_id=event["event_id"]))
    def dead_lettered() -> bool:
        return any("delivery limit exceeded" in r for r in _dlq_reasons(lab))

    for _ in range(6):  # a supervisor restarting a crashing service
        wait_until(lambda: not inv.running or dead_lettered(), 30, "a crash or the verdict")
        if dead_lettered():
            break
        lab.start_service("inventory", wait=False)
    wait_until(lambda: any("delivery limit exceeded" in r for r in _dlq_reasons(lab)), 30,
               "the poison message in the DLQ with its reason")
    inv.wait_healthy(30)
    healthy = post(lab, GOOD)  # and the consumer goes on
    lab.wait_notified([healthy.json()["order_id"]], 30)
@pytest.mark.slow


def test_reconnecting_does_not_leak_file_descriptors(lab):
    # A sanity check on a real broker; the garbage collector can hide a leak here, so
    # test_bus_unit.py checks directly that every attempt closes its I/O loop.
    order = lab.services["order"]
    proc = psutil.Process(order.proc.pid)

    def reconnects() -> int:
        return requests.get(lab.url("order") + "/health", timeout=5).json()["reconnects"]

    def close_connections() -> int:
        closed = 0
        for conn in admin._api(lab.broker, "GET", f"/vhosts/{lab.vhost}/connections").json():
            with contextlib.suppress(requests.HTTPError):  # listed, but already gone
                admin._api(lab.broker, "DELETE", f"/connections/{quote(conn['name'], safe='')}")
                closed += 1
        return closed

    def force_reconnect(n: int) -> None:
        before = reconnects()

        def closed_and_back() -> bool:
            # The management API lists a connection a moment after it opens, and may still
            # list one that is gone: close whatever it lists until the service reconnects.
            close_connections()
            return reconnects() > before

        wait_until(closed_and_back, 60, f"reconnect {n}", interval=0.5)

    def io_fds() -> int:
        # Sockets, pollers and pipes; not files: each HTTP thread opens its own store
        # connection (database, WAL, shared memory) on first use, whenever that is.
        return proc.num_fds() - len(proc.open_files())

    for n in range(3):
        force_reconnect(n)
    baseline = io_fds()
    for n in range(3, 11):
        force_reconnect(n)
    # A leak grows with every reconnect (it was one poller and its pipe each, before).
    assert io_fds() <= baseline + 3, (baseline, io_fds())


def test_an_oversized_unknown_item_is_refused_with_a_bounded_reason(lab):
    # Before: a 40 KB item id was accepted, its "unknown item: ..." outcome came out at
    # 80 KB, over the consumers' size limit, and the order stayed PENDING for ever.
    order_id = "ORD-20260101-0000big1"
    event = json.loads(events.order_placed(order_id, "u1",
                                           events.validate_items(BURGERS)).to_json())
    event["items"][0]["item_id"] = "x" * 40_000
    amqp.publish_raw(lab.amqp_url, json.dumps(event))
    wait_until(lambda: _dlq_reasons(lab), 30, "the order in the DLQ")
    (dead,) = amqp.read_queue(lab.amqp_url)
    assert dead["reason"].startswith("items[0].item_id: at most 64 characters")
    assert len(dead["reason"]) <= 500 and dead["original_queue"] == topo.QUEUE_ORDER_PLACED


def _nested(depth: int) -> dict:
    root: dict = {}
    node = root
    for _ in range(depth):
        node["x"] = {}
        node = node["x"]
    return root


def test_headers_too_deep_or_too_big_for_a_copy_do_not_stall_the_consumer(lab):
    import sys
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10_000)  # to encode what a foreign client could send
    try:
        amqp.publish_raw(lab.amqp_url, b"not json: deep",
                         properties=pika.BasicProperties(delivery_mode=2,
                                                         headers={"deep": _nested(900)}))
    finally:
        sys.setrecursionlimit(limit)
    # 128 KB of headers: a copy with the lab's reason added would exceed frame_max.
    big = {f"h{i}": "y" * 4000 for i in range(32)}
    big["pad"] = "z" * (131_072 - 32 * 4010 - 1200)
    amqp.publish_raw(lab.amqp_url, b"not json: big",
                     properties=pika.BasicProperties(delivery_mode=2, headers=big))
    order = post(lab, GOOD)
    lab.wait_notified([order.json()["order_id"]], 30)
    wait_until(lambda: len(_dlq_reasons(lab)) == 2, 30, "both messages in the DLQ")
    assert lab.get("inventory", "/health")["reconnects"] == 0


def test_a_forged_x_death_is_not_copied_into_a_retry(make_lab):
    # A forged x-death array copied into a retry copy broke the retry queue in the broker.
    lab = make_lab(extra_env={"LAB_FAIL_USER": "poison-pill"})
    event = json.loads(events.order_placed("ORD-20260101-000forge", "poison-pill",
                                           events.validate_items(BURGERS)).to_json())
    amqp.publish_raw(lab.amqp_url, json.dumps(event),
                     properties=pika.BasicProperties(delivery_mode=2,
                                                     headers={"x-death": [1, 2]}))
    wait_until(lambda: _dlq_reasons(lab), 30, "the poison order in the DLQ after its retries")
    (dead,) = amqp.read_queue(lab.amqp_url)
    assert dead["attempts"] == len(topo.RETRY_DELAYS_MS) + 1
    assert "simulated persistent failure" in dead["reason"]
    order = post(lab, GOOD)  # the retry tiers still work for everyone else
    lab.wait_notified([order.json()["order_id"]], 30)


def test_concurrent_retries_with_one_key_publish_one_event_in_direct_mode(make_lab):
    from concurrent.futures import ThreadPoolExecutor

    lab = make_lab(extra_env={"ORDER_PUBLISH": "direct"})
    lab.stop("inventory")  # the events stay in order_placed, to be counted
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: post(lab, GOOD, headers={"Idempotency-Key": "k1"}),
                                range(16)))
    statuses = {r.status_code for r in answers}
    assert statuses <= {201, 409}, statuses
    assert len({r.json()["order_id"] for r in answers if r.status_code == 201}) == 1
    assert amqp.depth(lab.amqp_url, topo.QUEUE_ORDER_PLACED) == 1
    assert len(lab.orders()) == 1


def test_dead_letters_carry_a_bounded_reason(lab):
    huge = {"event_id": "e" * 80_000, "event_type": "OrderPlaced"}
    amqp.publish_raw(lab.amqp_url, json.dumps(huge))
    wait_until(lambda: _dlq_reasons(lab), 30, "the message in the DLQ")
    (reason,) = _dlq_reasons(lab)
    assert reason.startswith("body: oversize") or reason.startswith("event_id")
    assert len(reason) <= 500
    dead = amqp.read_queue(lab.amqp_url)[0]
    assert dead["headers"][H_REASON] == reason
