"""The course apparatus: public URLs for a remote browser, and the crash workbench of notebook 03
(which must fail the handlers that are not idempotent), and
the tolerance of a measured answer."""

from __future__ import annotations

import math

import pytest

from harness.bench import crash as crashbench
from harness.course import labels_near, public_url

SPEEDUPS = ((0.9, "slower"), (1.2, "about the same"), (4, "faster"), (math.inf, "4x"))


def test_labels_near_accepts_a_neighbour_only_close_to_an_edge():
    assert labels_near(2.5, SPEEDUPS) == ("faster", {"faster"})
    assert labels_near(3.8, SPEEDUPS) == ("faster", {"faster", "4x"})
    assert labels_near(4.2, SPEEDUPS) == ("4x", {"faster", "4x"})
    assert labels_near(9.9, SPEEDUPS) == ("4x", {"4x"})
    assert labels_near(0.5, SPEEDUPS) == ("slower", {"slower"})
    assert labels_near(1.0, SPEEDUPS, slack=0) == ("about the same", {"about the same"})
    with pytest.raises(ValueError):
        labels_near(5, SPEEDUPS[:2])


def test_public_url_is_the_local_url_unless_a_public_host_is_set(monkeypatch):
    monkeypatch.delenv("LAB_PUBLIC_HOST", raising=False)
    assert public_url("http://127.0.0.1:15672") == "http://127.0.0.1:15672"
    assert public_url(None) is None
    assert public_url("http://127.0.0.1:15672", "lab.example.edu") == \
        "http://lab.example.edu:15672"
    proxy = "https://hub.example.edu/user/alice/proxy/{port}/"
    monkeypatch.setenv("LAB_PUBLIC_HOST", proxy)
    assert public_url("http://127.0.0.1:23456") == "https://hub.example.edu/user/alice/proxy/23456/"


@pytest.mark.broker
def test_crashbench_fails_off_and_memory_and_passes_sqlite(broker, tmp_path):
    orders = [{"order_id": f"o{i}", "items": [{"item_id": "item_1", "quantity": 2}]}
              for i in range(4)]
    verdicts = {name: crashbench.run(broker.amqp_url, handle, orders, tmp_path, design=name)
                for name, handle in crashbench.DESIGNS.items()}
    for v in verdicts.values():
        assert v.crashes == len(orders) and v.lives == len(orders) + 1
    assert not verdicts["off"].valid and verdicts["off"].reserved_twice == len(orders)
    assert not verdicts["memory"].valid and verdicts["memory"].reserved_twice == len(orders)
    assert verdicts["sqlite"].valid, verdicts["sqlite"]


@pytest.mark.broker
def test_crashbench_crashes_between_two_commits(broker, tmp_path):
    """A handler that reserves and records the processed id in two transactions is safe
    after returning, but a crash between its commits reserves twice."""
    def two_transactions(order, db):
        if db.execute("SELECT 1 FROM processed WHERE order_id = ?",
                      (order["order_id"],)).fetchone():
            return
        crashbench.reserve(db, order)
        db.commit()
        db.execute("INSERT INTO processed (order_id) VALUES (?)", (order["order_id"],))
        db.commit()

    orders = [{"order_id": f"t{i}", "items": [{"item_id": "item_1", "quantity": 1}]}
              for i in range(4)]
    v = crashbench.run(broker.amqp_url, two_transactions, orders, tmp_path, design="two")
    assert v.commits == 2 and v.crashes == len(orders)
    assert v.reserved_twice == 2 and v.not_reserved == 0  # the two orders crashed in between
    assert v.harm == "after commit 1 of 2: 2 reserved twice"
    assert crashbench.run(broker.amqp_url, crashbench.handle_sqlite, orders, tmp_path,
                          design="one").harm == ""


@pytest.mark.broker
def test_crashbench_reports_a_handler_that_raises(broker, tmp_path):
    def broken(order, db):
        raise ValueError("no such table")

    with pytest.raises(RuntimeError, match="no such table"):
        crashbench.run(broker.amqp_url, broken, [{"order_id": "x", "items": []}], tmp_path,
                       design="broken")


def test_lab_takes_the_wanted_ports_when_free_and_others_when_taken(tmp_path):
    """`harness up`: services on the documented ports, unless someone holds one."""
    import socket
    from types import SimpleNamespace

    from harness.lab import Lab
    from harness.ports import free_ports

    url = "amqp://guest:guest@127.0.0.1:1/%2F"
    broker = SimpleNamespace(amqp_url=url, amqp_urls=[url], management_url=None)
    wanted_free, wanted_taken = free_ports(2)
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", wanted_taken))
        holder.listen()
        lab = Lab(broker, workdir=tmp_path, services=("order", "inventory"),
                  ports={"order": wanted_free, "inventory": wanted_taken})
    assert lab.services["order"].port == wanted_free
    assert lab.services["inventory"].port not in (wanted_free, wanted_taken)


@pytest.mark.broker
def test_wiretap_sees_confirms_persistence_and_when_a_taken_message_is_acked(broker):
    import pika

    from harness.course.wiretap import Wiretap, replay_faults

    tap = Wiretap(broker.amqp_url)
    try:
        def replay(confirm: bool, mode: int | None, ack_first: bool) -> list[str]:
            tap.clear()
            conn = pika.BlockingConnection(pika.URLParameters(tap.url))
            ch = conn.channel()
            ch.queue_declare("tap.src", durable=True)
            ch.queue_declare("tap.dst", durable=True)
            if confirm:
                ch.confirm_delivery()
            ch.basic_publish("", "tap.src", b"x", pika.BasicProperties(delivery_mode=2))
            method, _, body = ch.basic_get("tap.src")
            if ack_first:
                ch.basic_ack(method.delivery_tag)
            ch.basic_publish("", "tap.dst", body, pika.BasicProperties(delivery_mode=mode))
            if not ack_first:
                ch.basic_ack(method.delivery_tag)
            ch.queue_purge("tap.dst")
            conn.close()
            return replay_faults(tap.events)

        assert replay(True, 2, False) == []
        found = replay(False, 2, False)
        assert len(found) == 1 and "without confirm_delivery()" in found[0]
        assert any("without delivery_mode=2" in f for f in replay(True, None, False))
        assert any("before republishing it" in f for f in replay(True, 2, True))
        declares = [e for e in tap.events if e.method == "queue.declare"]
        assert declares and all(e.fields["durable"] for e in declares)
    finally:
        tap.close()


def test_compare_prediction_says_how_far_off_and_why(capsys):
    from harness.course import compare_prediction

    said = compare_prediction("drain", 10, 14.5, "orders kept arriving.", relative=0.1)
    assert "under by 4.5" in said and "orders kept arriving." in said
    assert "(close)" in compare_prediction("drain", 14, 14.5, "", relative=0.1)
    assert "no prediction" in compare_prediction("drain", None, 3, "")
    assert "(right)" in compare_prediction("mode", "skip", "skip", "")
    assert "not what happened" in compare_prediction("refused", True, 3, "")
    assert "✔" not in capsys.readouterr().out
