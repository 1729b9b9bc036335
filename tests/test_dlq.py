"""Dead letters you can work with, on a real broker: the lab's promise that a poison order,
once its cause is fixed, is replayed from `dlq` and reserved exactly once, however often
it is replayed; and `dlq list | show | replay | purge` against hostile dead letters."""

from __future__ import annotations

import datetime
import decimal
import subprocess
import sys
import time
from pathlib import Path

import pika
import pika.data
import pytest

from harness import amqp, cli
from harness import deadletters as dlq
from harness import invariants as check
from harness.waiting import wait_until
from lab_services import pika_compat
from lab_services import topology as topo
from lab_services.headers import (
    H_ATTEMPTS,
    H_ORIGINAL_EXCHANGE,
    H_ORIGINAL_QUEUE,
    H_ORIGINAL_ROUTING_KEY,
    H_REASON,
)

POISON = "poison-pill"
BURGERS = [{"item_id": "item_1", "quantity": 2, "price": 10.0}]


def place(lab, user: str) -> str:
    r = lab.place_order(user, BURGERS)
    assert r.status_code in (201, 202), r.text
    return r.json()["order_id"]


def dead_letters(lab, n: int) -> list[dlq.DeadLetter]:
    """Wait (bounded) until the DLQ holds exactly n messages; return them."""
    return wait_until(lambda: len(d := dlq.read(lab.amqp_url)) == n and d, 60,
                      f"{n} messages in dlq",
                      detail=lambda: f"dlq holds {amqp.depth(lab.amqp_url, topo.DLQ)}")


def reinject(lab, d: dlq.DeadLetter) -> None:
    """Put a copy of a dead letter back into dlq, as a replay that died before its ack would."""
    headers = {H_REASON: d.reason, H_ORIGINAL_EXCHANGE: d.exchange,
               H_ORIGINAL_ROUTING_KEY: d.routing_key, H_ORIGINAL_QUEUE: d.queue,
               H_ATTEMPTS: d.attempts}
    props = pika.BasicProperties(delivery_mode=2, content_type="application/json",
                                 message_id=d.message_id, correlation_id=d.order_id,
                                 headers=headers)
    amqp.publish_raw(lab.amqp_url, d.body, exchange=topo.DEAD_LETTERS,
                     routing_key=d.routing_key or "", properties=props)


def verdict(lab, accepted: list[str]) -> check.Verdict:
    """The checker's verdict on everything the lab holds now."""
    return check.check_run(accepted=accepted, inventory=lab.inventory(),
                           ledger=lab.reservations(), notifications=lab.notifications(),
                           dlq=amqp.read_queue(lab.amqp_url))


def barrier(lab, accepted: list[str]) -> None:
    """Place a fine order and wait until it is notified: what was queued before is done."""
    order_id = place(lab, "sentinel")
    accepted.append(order_id)
    lab.wait_notified([order_id], 30)


@pytest.mark.broker
def test_poison_orders_replayed_after_the_fix_are_reserved_exactly_once(make_lab):
    lab = make_lab(extra_env={"LAB_FAIL_USER": POISON})
    poison = [place(lab, POISON) for _ in range(3)]
    accepted = [*poison, place(lab, "fine")]
    lab.wait_notified(accepted[-1:], 30)  # the poison does not block the queue

    # After the retry tiers (200, 800, 3200 ms) every poison order is dead-lettered.
    dead = dead_letters(lab, 3)
    assert sorted(d.order_id for d in dead) == sorted(poison)
    for d in dead:
        assert "simulated persistent failure" in d.reason
        assert d.attempts == len(topo.RETRY_DELAYS_MS) + 1
        # The origin survives the retry tiers: a replay goes where the order first went.
        assert (d.exchange, d.routing_key) == (topo.ORDER_EVENTS, topo.KEY_ORDER_PLACED)
    assert not set(poison) & {n["order_id"] for n in lab.notifications()}

    # Fix the cause, then replay: each poison order is reserved and notified once.
    lab.restart("inventory", env={"LAB_FAIL_USER": ""})
    one = dlq.replay(lab.amqp_url, reason="simulated persistent failure", limit=1)
    assert len(one.replayed) == 1 and one.skipped == 2
    rest = dlq.replay(lab.amqp_url, reason="simulated persistent failure")
    assert sorted(d.order_id for d in one.replayed + rest.replayed) == sorted(poison)
    assert rest.failed == [] and amqp.depth(lab.amqp_url, topo.DLQ) == 0
    lab.wait_notified(poison, 30)
    barrier(lab, accepted)
    first = verdict(lab, accepted)
    assert first.valid, first.problems
    assert first.counts["reserved"] == len(accepted) and first.counts["dlq_messages"] == 0
    stock = lab.inventory()["item_1"]["stock"]
    assert stock == 100 - 2 * len(accepted)

    # Replaying again changes nothing: copies of the same dead letters (a replay that died
    # between the confirm and the ack leaves exactly these), replayed once more.
    for d in dead:
        reinject(lab, d)
    assert len(dead_letters(lab, 3)) == 3
    again = dlq.replay(lab.amqp_url)
    assert len(again.replayed) == 3 and again.failed == []
    barrier(lab, accepted)
    second = verdict(lab, accepted)
    assert second.valid, second.problems
    assert lab.inventory()["item_1"]["stock"] == stock - 2  # only the new barrier order
    ledger = lab.reservations()["reservations"]
    assert all(sum(r["order_id"] == o for r in ledger) == 1 for o in poison)
    notes = [n["order_id"] for n in lab.notifications()]
    assert all(notes.count(o) == 1 for o in poison)
    assert amqp.depth(lab.amqp_url, topo.DLQ) == 0


@pytest.mark.broker
def test_the_checker_sees_a_double_replay_without_an_idempotent_consumer(make_lab):
    # The deliberately broken configuration: no duplicate check in the inventory.
    lab = make_lab(idempotency="off", extra_env={"LAB_FAIL_USER": POISON})
    order_id = place(lab, POISON)
    dead = dead_letters(lab, 1)
    lab.restart("inventory", env={"LAB_FAIL_USER": ""})
    reinject(lab, dead[0])
    report = dlq.replay(lab.amqp_url)
    assert [d.order_id for d in report.replayed] == [order_id, order_id]
    accepted = [order_id]
    wait_until(lambda: sum(r["order_id"] == order_id
                           for r in lab.reservations()["reservations"]) == 2, 30,
               "the second reservation")
    barrier(lab, accepted)
    v = verdict(lab, accepted)
    assert not v.valid and v.counts["double_reservations"] == 1
    assert any("reserved stock twice" in p for p in v.problems)
    assert lab.inventory()["item_1"]["stock"] == 100 - 2 * 2 - 2  # twice, plus the barrier


def hostile(lab, body: bytes, headers: dict | None, **props) -> None:
    """Publish straight into dlq (through its fanout exchange), as any client could."""
    amqp.publish_raw(lab.amqp_url, body, exchange=topo.DEAD_LETTERS, routing_key="x",
                     properties=pika.BasicProperties(delivery_mode=2, headers=headers, **props))


@pytest.mark.broker
def test_list_show_replay_and_purge_survive_hostile_dead_letters(lab, capsys):
    url = lab.amqp_url
    # 1: a malformed order, dead-lettered by the lab itself with its reason.
    amqp.publish_raw(url, "not valid json at all")
    dead_letters(lab, 1)
    # 2: a 1 MB body and an escape sequence in the reason, routed nowhere.
    hostile(lab, b"\xff" * 1_000_000,
            {H_REASON: "evil \x1b[31mred\x1b[0m\n" + "r" * 50_000,
             H_ORIGINAL_EXCHANGE: topo.ORDER_EVENTS, H_ORIGINAL_ROUTING_KEY: "to.nowhere",
             H_ATTEMPTS: "4; rm -rf /"})
    # 3: no headers at all: nothing says where it came from.
    hostile(lab, b'{"order_id": "ORD-from-nowhere"}', None)
    # 4: exotic header types and an origin exchange that does not exist.
    hostile(lab, b"[1, 2", {H_REASON: "exotic", H_ORIGINAL_EXCHANGE: "no-such-exchange",
                            H_ORIGINAL_ROUTING_KEY: "k", "x-bytes": b"\xfe\xff",
                            "x-dec": decimal.Decimal("1.5"), "x-nested": [{"a": [1, None]}],
                            "x-big": 2**62})
    # 5: a replayable message carrying a broker-style x-death and no lab headers.
    hostile(lab, b'{"order_id": "ORD-x-death"}',
            {"x-death": [{"reason": "rejected", "queue": "somewhere", "exchange": "",
                          "routing-keys": ["dlq-replay-target"], "count": 1}]})
    with amqp.channel(url) as ch:
        ch.queue_declare("dlq-replay-target", durable=True)
    wait_until(lambda: amqp.depth(url, topo.DLQ) == 5, 30, "five dead letters")

    assert cli.main(["dlq", "list", "--amqp-url", url]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()[1:]
    assert len(lines) == 5 and "\x1b" not in out and len(out) < 5_000
    assert "body: not valid JSON" in lines[0] and "order_events/order.placed" in lines[0]
    assert "evil \\x1b[31mred" in lines[1] and "chars)" in lines[1]
    assert "ORD-from-nowhere" in lines[2] and "?/?" in lines[2]
    assert "rejected" in lines[4] and "/dlq-replay-target" in lines[4]
    listed = dlq.read(url)
    assert [d.attempts for d in listed[1:]] == [None] * 4  # "4; rm -rf /" is not a count
    assert [d.body_bytes for d in listed][:2] == [len("not valid json at all"), 1_000_000]

    assert cli.main(["dlq", "show", "2", "--amqp-url", url, "--max-body", "100"]) == 0
    out = capsys.readouterr().out
    assert "1000000 bytes" in out and "\x1b" not in out and len(out) < 5_000
    assert cli.main(["dlq", "show", "4", "--amqp-url", url]) == 0
    out = capsys.readouterr().out
    assert "x-dec" in out and "x-nested" in out
    assert cli.main(["dlq", "show", "9", "--amqp-url", url]) == 1

    # Replay everything: three cannot go anywhere and stay; the x-death one reaches its
    # queue; the malformed order goes back to the inventory, which dead-letters it again.
    assert cli.main(["dlq", "replay", "--amqp-url", url]) == 1
    out = capsys.readouterr().out
    assert "replayed 2," in out and "3 failed" in out
    assert "unroutable" in out and "no original exchange" in out and "404" in out
    assert amqp.depth(url, "dlq-replay-target") == 1
    left = dead_letters(lab, 4)
    assert left[0].reason.startswith("evil") and left[1].reason is None
    assert left[2].reason == "exotic" and left[3].reason.startswith("body: not valid JSON")
    # A filter that matches nothing replays nothing.
    assert dlq.replay(url, reason="no such reason").replayed == []
    assert dlq.replay(url, reason="exotic", limit=5).failed[0][0].reason == "exotic"
    assert amqp.depth(url, topo.DLQ) == 4

    assert cli.main(["dlq", "purge", "--amqp-url", url]) == 0
    assert "purged 4 messages" in capsys.readouterr().out
    assert cli.main(["dlq", "list", "--amqp-url", url]) == 0
    assert "dlq is empty" in capsys.readouterr().out


def test_a_replayed_copy_starts_afresh_and_can_always_be_encoded():
    props = pika.BasicProperties(
        delivery_mode=2, message_id="e1", correlation_id="ORD-1",
        headers={H_REASON: "r", H_ATTEMPTS: 4, "x-death": [{"count": 1}],
                 "x-last-error": "boom", "keep": "me", "x-float": 1e30,
                 "x-huge-int": 10**30, "é" * 200: "long key"})
    copy = dlq.replay_properties(props)
    assert copy.headers["keep"] == "me" and copy.headers["x-float"] == "1e+30"
    assert copy.headers["x-huge-int"] == str(10**30)
    assert not {H_REASON, H_ATTEMPTS, "x-death", "x-last-error"} & set(copy.headers)
    assert all(len(k.encode()) <= 255 for k in copy.headers)
    assert copy.message_id == "e1" and copy.delivery_mode == 2
    copy.encode()


def test_describe_reads_the_lab_headers_first_and_falls_back_to_x_death():
    lab_made = pika.BasicProperties(headers={
        H_REASON: "why", H_ORIGINAL_EXCHANGE: "ex", H_ORIGINAL_ROUTING_KEY: "rk",
        H_ATTEMPTS: 4, "x-death": [{"reason": "rejected", "exchange": "other",
                                    "routing-keys": ["k2"]}]})
    d = dlq.describe(1, lab_made, b'{"order_id": "ORD-1"}')
    assert (d.reason, d.exchange, d.routing_key, d.attempts, d.order_id) == \
        ("why", "ex", "rk", 4, "ORD-1")
    broker_made = pika.BasicProperties(headers={"x-death": [
        {"reason": "expired", "exchange": "", "routing-keys": ["q"], "queue": "q"}]})
    d = dlq.describe(2, broker_made, b"\x00" * 100_000)
    assert (d.reason, d.exchange, d.routing_key, d.order_id) == ("expired", "", "q", None)
    assert d.body_bytes == 100_000 and len(d.body) == dlq.MAX_PARSE_BYTES  # memory bounded
    weird = pika.BasicProperties(headers={"x-death": "not a list", H_ATTEMPTS: True})
    d = dlq.describe(3, weird, b"[" * 50_000)
    assert d.exchange is None and d.attempts is None and not d.replayable


class FarFuture(datetime.datetime):
    """A timestamp header past year 9999: pika encodes it, but cannot decode it."""

    def utctimetuple(self):
        return time.struct_time((9999, 12, 10**9, 0, 0, 0, 0, 1, 0))


@pytest.mark.broker
def test_a_far_future_timestamp_header_is_listed_and_replayed(lab, capsys):
    url = lab.amqp_url
    with amqp.channel(url) as ch:
        ch.queue_declare("dlq-replay-target", durable=True)
    hostile(lab, b"far", {H_REASON: "far future", "t": FarFuture(2020, 1, 1),
                          H_ORIGINAL_EXCHANGE: "", H_ORIGINAL_ROUTING_KEY: "dlq-replay-target"})
    assert [d.reason for d in dead_letters(lab, 1)] == ["far future"]
    assert cli.main(["dlq", "show", "1", "--amqp-url", url]) == 0
    assert "far future" in capsys.readouterr().out
    report = dlq.replay(url)
    assert [d.body for d in report.replayed] == [b"far"] and report.failed == []
    assert amqp.depth(url, "dlq-replay-target") == 1


@pytest.mark.broker
def test_a_dead_letter_pika_cannot_decode_is_reported_and_can_be_dropped(lab, capsys,
                                                                         monkeypatch):
    # Without the lab's tolerant decoder, pika drops the connection on that frame: a stand-in
    # for any frame this client cannot decode.
    monkeypatch.setattr(pika.data, "decode_value", pika_compat.pika_decode_value)
    url = lab.amqp_url
    with amqp.channel(url) as ch:
        ch.queue_declare("dlq-replay-target", durable=True)
    origin = {H_REASON: "fine", H_ORIGINAL_EXCHANGE: "",
              H_ORIGINAL_ROUTING_KEY: "dlq-replay-target"}
    hostile(lab, b"first", origin)
    hostile(lab, b"unreadable", {H_REASON: "far future", "t": FarFuture(2020, 1, 1)})
    hostile(lab, b"third", origin)
    wait_until(lambda: amqp.depth(url, topo.DLQ) == 3, 30, "three dead letters")

    with pytest.raises(dlq.Unreadable) as caught:
        dlq.read(url)
    assert caught.value.index == 2 and [d.body for d in caught.value.dead] == [b"first"]
    assert cli.main(["dlq", "list", "--amqp-url", url]) == 1
    captured = capsys.readouterr()
    assert "fine" in captured.out and "#2 cannot be decoded" in captured.err
    assert "dlq drop 2" in captured.err

    # Replay goes as far as it can, and says where it stopped; nothing is lost.
    report = dlq.replay(url)
    assert [d.body for d in report.replayed] == [b"first"]
    assert report.unreadable is not None and report.unreadable.index == 2
    wait_until(lambda: amqp.depth(url, topo.DLQ) == 2, 30, "the two left in dlq")

    assert cli.main(["dlq", "drop", "1", "--amqp-url", url]) == 0
    assert "dropped #1" in capsys.readouterr().out
    left = dlq.read(url)
    assert [d.body for d in left] == [b"third"]
    assert [d.body for d in dlq.replay(url).replayed] == [b"third"]
    assert amqp.depth(url, "dlq-replay-target") == 2 and amqp.depth(url, topo.DLQ) == 0


def test_dlq_reports_an_unreachable_broker_without_a_traceback():
    out = subprocess.run([sys.executable, "-m", "harness", "dlq", "list", "--amqp-url",
                          "amqp://guest:guest@127.0.0.1:9/"], capture_output=True, text=True,
                         timeout=60, cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 2 and "error: AMQP" in out.stderr
    assert "Traceback" not in out.stderr


def test_safe_text_cannot_steer_a_terminal():
    assert dlq.safe("a\x1b[2Jb\nc\u202ed") == "a\\x1b[2Jb\\nc\\u202ed"
    long = dlq.safe("x" * 1000, 10)
    assert long.startswith("x" * 10) and "(1000 chars)" in long and len(long) < 40
    assert dlq.safe(b"\xff") == "b'\\xff'"
