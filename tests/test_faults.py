"""Fault injection against a real broker: a stop is over when the broker says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import amqp
from harness.faults import Faults
from harness.lab import Lab
from harness.observe import Timeline
from harness.runner import order_event
from harness.waiting import wait_until
from lab_services import topology as topo

pytestmark = pytest.mark.broker

ROOT = Path(__file__).resolve().parents[1]


def test_orders_published_right_after_an_auto_ack_consumer_stops_wait_in_the_queue(
        broker, tmp_path):
    # An auto-ack inventory (the ack-first variant) takes every delivery off the queue at
    # once. Until the broker has dropped a stopped one's consumer it still delivers to it,
    # into the void: the stop must end only when the broker counts no consumer.
    lab = Lab(broker, impl=ROOT / "tests/impls/variants/ack_first.toml",
              workdir=tmp_path / "lab").start()
    try:
        order = lab.place_order("u1", [{"item_id": "item_1", "quantity": 1, "price": 1.0}])
        assert order.status_code == 201, order.text
        event = order_event(lab.get("order", f"/order/{order.json()['order_id']}"))
        faults = Faults(lab, broker, Timeline())
        for round_ in range(3):
            faults.stop_service("inventory")
            assert amqp.consumers(lab.amqp_url, topo.QUEUE_ORDER_PLACED) == 0
            for _ in range(5):
                amqp.republish_order(lab.amqp_url, event, same_event_id=False)
            assert wait_until(lambda: amqp.depth(lab.amqp_url, topo.QUEUE_ORDER_PLACED) >= 5,
                              10, "5 copies waiting")
            assert amqp.depth(lab.amqp_url, topo.QUEUE_ORDER_PLACED) == 5
            lab.start_service("inventory")
            wait_until(lambda: amqp.depth(lab.amqp_url, topo.QUEUE_ORDER_PLACED) == 0, 30,
                       f"round {round_}: the copies taken")
    finally:
        lab.close()
