"""Pure logic: the one topology definition and the definitions it renders."""

from __future__ import annotations

import pytest

from lab_services import topology as t


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_work_queues_dead_letter_into_dlq(queue_type):
    topo = t.build_topology(queue_type)
    queues = {q.name: q for q in topo.queues}
    for name in (t.QUEUE_ORDER_PLACED, t.QUEUE_INVENTORY_RESERVED, t.QUEUE_INVENTORY_FAILED,
                 t.QUEUE_ORDER_STATUS):
        assert queues[name].durable
        assert queues[name].arguments["x-dead-letter-exchange"] == t.DEAD_LETTERS
        assert queues[name].arguments["x-queue-type"] == queue_type
    assert queues[t.DLQ].durable
    assert (t.DEAD_LETTERS, t.DLQ, "#") in {(b.exchange, b.queue, b.routing_key)
                                          for b in topo.bindings}


def test_exchanges_and_bindings_match_the_contract():
    topo = t.build_topology()
    assert {(e.name, e.type, e.durable) for e in topo.exchanges} >= {
        ("order_events", "topic", True), ("inventory_events", "topic", True)}
    keys = {(b.exchange, b.routing_key, b.queue) for b in topo.bindings}
    assert ("order_events", "order.placed", "order_placed") in keys
    assert ("inventory_events", "inventory.reserved", "inventory_reserved") in keys
    assert ("inventory_events", "inventory.failed", "inventory_failed") in keys


def test_retry_queues_return_to_the_work_queue_with_growing_delays():
    queues = {q.name: q for q in t.build_topology().queues}
    delays = []
    for attempt in range(1, len(t.RETRY_DELAYS_MS) + 1):
        args = queues[t.retry_queue(attempt)].arguments
        assert args["x-dead-letter-exchange"] == ""
        assert args["x-dead-letter-routing-key"] == t.QUEUE_ORDER_PLACED
        delays.append(args["x-message-ttl"])
    assert delays == sorted(delays) and len(set(delays)) == len(delays)


def test_definitions_render_every_object():
    topo = t.build_topology()
    defs = topo.definitions()
    assert [q["name"] for q in defs["queues"]] == topo.queue_names()
    assert len(defs["bindings"]) == len(topo.bindings)
    assert "users" not in defs  # credentials never live in the topology


def test_unknown_queue_type_is_refused():
    with pytest.raises(ValueError, match="queue type"):
        t.build_topology("stream")


@pytest.mark.parametrize(("pattern", "key", "matches"), [
    ("inventory.*", "inventory.reserved", True), ("inventory.*", "inventory.reserved.x", False),
    ("inventory.*", "inventory", False), ("#", "a.b.c", True), ("a.#", "a", True),
    ("a.#.c", "a.c", True), ("a.#.c", "a.x.y.c", True), ("a.#.c", "a.x.y", False),
    ("*.b", "a.b", True), ("order.placed", "order.placed", True), ("order.placed", "order", False)])
def test_topic_keys_match_as_the_broker_matches_them(pattern, key, matches):
    assert t.topic_matches(pattern, key) is matches


def test_an_outcome_is_meant_for_its_notification_queue_and_order_status():
    assert t.destinations(t.INVENTORY_EVENTS, t.KEY_INVENTORY_RESERVED) == (
        t.QUEUE_INVENTORY_RESERVED, t.QUEUE_ORDER_STATUS)
    assert t.destinations(t.INVENTORY_EVENTS, t.KEY_INVENTORY_FAILED) == (
        t.QUEUE_INVENTORY_FAILED, t.QUEUE_ORDER_STATUS)
    assert t.destinations(t.ORDER_EVENTS, t.KEY_ORDER_PLACED) == (t.QUEUE_ORDER_PLACED,)
    assert t.destinations(t.DEAD_LETTERS, "anything") == (t.DLQ,)
    assert t.destinations(t.INVENTORY_EVENTS, "inventory.reserved.notification") == ()
    assert {b.routing_key for b in t.build_topology().bindings_of(t.QUEUE_ORDER_STATUS)} == {
        "inventory.*"}
