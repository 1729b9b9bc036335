"""Bus bookkeeping without a broker: a stub channel records what the session sends.

Confirm settlement, `multiple` confirms, nacks, returns, encode failures, acks over the
settled prefix, retry headers and the delivery limit. The same behaviour is proven on a
real broker in test_hostile_input.py and test_pipeline.py.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import time
from concurrent.futures import Future
from contextlib import contextmanager
from types import SimpleNamespace

import pika
import pytest
from pika.spec import Basic

from lab_services import headers as h
from lab_services import messages as m
from lab_services import pika_compat
from lab_services import topology as topo
from lab_services.events import InvalidEvent
from lab_services.messages import BrokerUnavailable, Unpublishable, Unroutable
from lab_services.redeliveries import MemoryDeliveryCounter
from lab_services.retry import RetryPolicy, backoff_s
from lab_services.session import Session
from lab_services.store import SqliteStore


class StubChannel:
    """Records publishes, acks and nacks; encodes properties the way pika does."""

    def __init__(self) -> None:
        self.is_open = True
        self.published: list[m.Outgoing] = []
        self.acks: list[tuple[int, bool]] = []
        self.nacks: list[tuple[int, bool]] = []
        self.sent: list[tuple[str, object]] = []  # checks and publishes, in the order sent

    def basic_publish(self, exchange, routing_key, body, properties, mandatory=False):
        assert mandatory, "every publish must be mandatory"
        # pika builds the frames before sending: an unencodable property raises here.
        properties.encode()
        self.published.append(m.Outgoing(exchange, routing_key, body, properties))
        self.sent.append(("publish", body))

    def queue_declare(self, queue, passive=False, callback=None, **_kw):
        assert passive and callback is None, "a check is passive and waits for nothing"
        self.sent.append(("check", queue))

    def basic_ack(self, tag, multiple=False):
        self.acks.append((tag, multiple))

    def basic_nack(self, tag, requeue=True):
        self.nacks.append((tag, requeue))


class Clock:
    """A scheduler that runs callbacks when told, recording their delays."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, object]] = []

    def __call__(self, delay, fn):
        self.calls.append((delay, fn))

    def run(self) -> list[float]:
        calls, self.calls = self.calls, []
        for _delay, fn in calls:
            fn()
        return [d for d, _ in calls]


def confirm(seq: int, *, multiple: bool = False, ok: bool = True):
    method = Basic.Ack(seq, multiple) if ok else Basic.Nack(seq, multiple)
    return SimpleNamespace(method=method)


def make_session(**kw) -> tuple[Session, StubChannel, Clock]:
    ch, clock = StubChannel(), Clock()
    return Session(ch, name="test", schedule=clock, **kw), ch, clock


def out(body: bytes = b"{}", **props) -> m.Outgoing:
    return m.Outgoing("ex", "key", body, pika.BasicProperties(**props))


def deliver(session: Session, consumer: m.Consumer, tag: int, body: bytes = b"{}", *,
            redelivered: bool = False, headers=None, message_id=None) -> None:
    method = SimpleNamespace(exchange="order_events", routing_key="order.placed",
                             redelivered=redelivered, delivery_tag=tag)
    props = pika.BasicProperties(headers=headers, message_id=message_id)
    session.on_message(consumer, method, props, body)


def echo_consumer(outputs=1, **kw) -> m.Consumer:
    def handler(d: m.Delivery) -> list[m.Outgoing]:
        return [m.Outgoing("inventory_events", "inventory.reserved", d.body + bytes([i]))
                for i in range(outputs)]
    return m.Consumer("order_placed", handler, **kw)


# ---- publishing and confirms ----------------------------------------------------------


def test_a_publish_that_fails_to_encode_takes_no_sequence_number():
    session, ch, _ = make_session()
    first, bad, third = Future(), Future(), Future()
    session.publish(out(b"1"), first)
    session.publish(out(b"2", correlation_id="x" * 300), bad)  # over 255 bytes
    session.publish(out(b"3"), third)
    assert isinstance(bad.exception(0), Unpublishable)
    assert [o.body for o in ch.published] == [b"1", b"3"]
    # The broker numbers what it received: 1 and 2. Confirm 2 settles the third publish.
    session.on_confirm(confirm(2))
    assert third.result(0) is True and not first.done()
    session.on_confirm(confirm(1))
    assert first.result(0) is True


def test_each_queue_a_message_is_meant_for_is_checked_just_before_it_is_published():
    session, ch, _ = make_session()
    session.publish(out(b"plain"), Future())
    outcome = m.Outgoing("inventory_events", "inventory.reserved", b"outcome",
                         destinations=("inventory_reserved", "order_status"))
    session.publish(outcome, Future())
    assert ch.sent == [("publish", b"plain"), ("check", "inventory_reserved"),
                       ("check", "order_status"), ("publish", b"outcome")]
    session.on_confirm(confirm(2, multiple=True))
    assert session.stats["published"] == 2 and not session.pending


def test_the_inventory_names_both_queues_an_outcome_is_meant_for():
    from lab_services.inventory import outcome_message
    from lab_services.store import Outcome
    for reserved, queue in ((True, topo.QUEUE_INVENTORY_RESERVED),
                            (False, topo.QUEUE_INVENTORY_FAILED)):
        msg = outcome_message(Outcome("o-1", reserved, None if reserved else "short", "e-1",
                                      b"{}"))
        assert (msg.exchange, msg.destinations) == (topo.INVENTORY_EVENTS,
                                                    (queue, topo.QUEUE_ORDER_STATUS))


def test_a_multiple_confirm_settles_every_publish_up_to_its_tag():
    session, _, _ = make_session()
    futures = [Future() for _ in range(5)]
    for i, f in enumerate(futures):
        session.publish(out(bytes([i])), f)
    session.on_confirm(confirm(3, multiple=True))
    assert [f.done() for f in futures] == [True, True, True, False, False]
    session.on_confirm(confirm(5, multiple=True, ok=False))
    assert isinstance(futures[3].exception(0), BrokerUnavailable)
    assert isinstance(futures[4].exception(0), BrokerUnavailable)


def test_a_returned_message_fails_its_publish_even_though_the_broker_acks_it():
    session, _, _ = make_session()
    routed, unroutable = Future(), Future()
    session.publish(out(b"routed"), routed)
    session.publish(m.Outgoing("ex", "nowhere", b"lost"), unroutable)
    ret = SimpleNamespace(reply_code=312, reply_text="NO_ROUTE", exchange="ex",
                          routing_key="nowhere")
    session.on_return(None, ret, None, b"lost")
    session.on_confirm(confirm(2, multiple=True))
    assert routed.result(0) is True
    assert isinstance(unroutable.exception(0), Unroutable)
    assert "NO_ROUTE" in str(unroutable.exception(0))


def test_losing_the_channel_fails_every_waiting_publisher():
    session, _, _ = make_session()
    f = Future()
    session.publish(out(), f)
    session.fail_all(BrokerUnavailable("gone"))
    assert isinstance(f.exception(0), BrokerUnavailable)
    g = Future()
    session.publish(out(), g)
    assert isinstance(g.exception(0), BrokerUnavailable)


# ---- consuming and acks ----------------------------------------------------------------


def test_inputs_are_acked_as_one_multiple_ack_over_the_confirmed_prefix():
    session, ch, clock = make_session()
    consumer = echo_consumer()
    for tag in (1, 2, 3):
        deliver(session, consumer, tag, bytes([tag]))
    clock.run()
    assert len(ch.published) == 3 and ch.acks == []
    session.on_confirm(confirm(2))  # the second output: nothing before it is settled
    assert ch.acks == []
    session.on_confirm(confirm(1))
    assert ch.acks == [(2, True)]
    session.on_confirm(confirm(3))
    assert ch.acks == [(2, True), (3, False)]


def test_an_input_whose_output_cannot_be_encoded_is_dead_lettered_and_settled():
    session, ch, clock = make_session()

    def handler(d: m.Delivery) -> list[m.Outgoing]:
        return [out(b"x", correlation_id="c" * 300)]

    consumer = m.Consumer("order_placed", handler)
    deliver(session, consumer, 1, b'{"order": 1}')
    deliver(session, consumer, 2, b'{"order": 2}')
    clock.run()
    dead = [o for o in ch.published if o.exchange == topo.DEAD_LETTERS]
    assert len(dead) == 2
    assert "output could not be published" in dead[0].properties.headers[h.H_REASON]
    session.on_confirm(confirm(2, multiple=True))
    assert ch.acks[-1][0] == 2 and not session.unsettled  # nothing wedged: both settled


def test_a_dead_letter_copy_survives_headers_pika_cannot_encode_again():
    session, ch, clock = make_session()

    def malformed(_d: m.Delivery) -> list[m.Outgoing]:
        raise InvalidEvent("body: not valid JSON")

    consumer = m.Consumer("order_placed", malformed)
    hostile = {"float": 1e30, "decimal": __import__("decimal").Decimal("1e30"),
               "k" * 300: "long name", "nested": {"f": 2.5, "list": [1.5, "a"]}}
    deliver(session, consumer, 1, b"not json", headers=hostile)
    clock.run()
    (dead,) = ch.published
    assert dead.exchange == topo.DEAD_LETTERS
    sent = dead.properties.headers
    assert sent[h.H_REASON] == "body: not valid JSON"
    assert sent["float"] == "1e+30" and "k" * 300 not in sent
    assert h.encodable(sent)


def test_a_returned_output_sends_the_input_to_its_retry_tier_with_a_count():
    session, ch, clock = make_session()
    consumer = echo_consumer(retry=RetryPolicy(queue="order_placed"))
    deliver(session, consumer, 1, b"a")
    clock.run()
    (first,) = ch.published
    ret = SimpleNamespace(reply_code=312, reply_text="NO_ROUTE", exchange=first.exchange,
                          routing_key=first.routing_key)
    session.on_return(None, ret, None, first.body)
    session.on_confirm(confirm(1))
    retry = ch.published[-1]
    assert retry.routing_key == topo.retry_queue(1) and retry.exchange == ""
    assert retry.properties.headers[h.H_ATTEMPTS] == 1
    assert ch.nacks == []  # no immediate requeue: that would be a hot loop
    session.on_confirm(confirm(2))
    assert ch.acks == [(1, False)]


def test_an_output_the_broker_keeps_refusing_waits_at_the_slowest_tier_and_is_never_dead_lettered():
    # A quorum queue without a majority nacks every publish, for as long as a partition
    # lasts: that is no reason to give up on the order, unlike a handler that fails.
    session, ch, clock = make_session()
    consumer = echo_consumer(retry=RetryPolicy(queue="order_placed"))
    tiers = []
    for attempt in range(6):
        headers = {h.H_ATTEMPTS: attempt} if attempt else None
        deliver(session, consumer, attempt + 1, b"a", headers=headers)
        clock.run()
        output_seq = len(ch.published)
        session.on_confirm(confirm(output_seq, ok=False))  # the broker refused the outcome
        rerouted = ch.published[-1]
        assert rerouted.exchange == "" and rerouted.routing_key.startswith("order_placed.retry")
        tiers.append(rerouted.properties.headers[h.H_ATTEMPTS])
        session.on_confirm(confirm(output_seq + 1))  # the copy is in its tier: ack the input
    last = len(topo.RETRY_DELAYS_MS)
    assert tiers == [min(a + 1, last) for a in range(6)]
    assert ch.published[-1].routing_key == topo.retry_queue(last)
    assert session.stats["dead_lettered"] == 0 and len(ch.acks) == 6


@pytest.mark.parametrize("forged, tier", [
    (10**6, len(topo.RETRY_DELAYS_MS)),  # the largest count taken: still only the last tier
    (10**30, 1), (-5, 1), ("9" * 40, 1), ("abc", 1), (True, 1), (1e30, 1), ([3], 1),
])
def test_a_forged_attempt_count_on_a_refused_output_picks_a_real_tier(forged, tier):
    # Another client sets x-attempts as it likes; on the refused path the count only picks
    # the tier, so it must land in one that exists, never raise, never dead-letter.
    session, ch, clock = make_session()
    consumer = echo_consumer(retry=RetryPolicy(queue="order_placed"))
    deliver(session, consumer, 1, b"a", headers={h.H_ATTEMPTS: forged})
    clock.run()
    session.on_confirm(confirm(len(ch.published), ok=False))
    rerouted = ch.published[-1]
    assert rerouted.routing_key == topo.retry_queue(tier)
    assert rerouted.properties.headers[h.H_ATTEMPTS] == tier
    session.on_confirm(confirm(len(ch.published)))
    assert ch.acks and session.stats["dead_lettered"] == 0


def test_a_batch_that_fails_to_commit_is_requeued_after_a_growing_pause():
    def broken_unit_of_work():
        raise sqlite3.OperationalError("disk I/O error")

    session, ch, clock = make_session()
    consumer = echo_consumer(unit_of_work=broken_unit_of_work)
    delays = []
    for tag in (1, 2, 3):
        deliver(session, consumer, tag)
        clock.run()  # handle the burst: it fails, a requeue is scheduled
        delays += clock.run()
    assert ch.nacks == [(1, True), (2, True), (3, True)]
    assert delays == [backoff_s(1), backoff_s(2), backoff_s(3)] and delays[0] > 0
    assert delays[0] < delays[1] < delays[2]


def test_a_message_redelivered_past_the_limit_is_dead_lettered_without_the_handler():
    calls = []

    def handler(d: m.Delivery) -> list[m.Outgoing]:
        calls.append(d.delivery_tag)
        return [out(d.body)]  # never confirmed: the process "dies" before that

    counter = MemoryDeliveryCounter()
    consumer = m.Consumer("order_placed", handler)
    for tag in (1, 2, 3):  # each on a new connection, as after a crash and restart
        session, ch, clock = make_session(counter=counter, delivery_limit=3)
        deliver(session, consumer, tag, b"kills the process", redelivered=True,
                message_id="m1")
        clock.run()
    assert calls == [1, 2]
    dead = ch.published[-1]
    assert "delivery limit exceeded" in dead.properties.headers[h.H_REASON]
    session.on_confirm(confirm(1))
    assert ch.acks == [(3, False)]
    # Once settled, the count is gone: a replayed copy starts again from zero.
    assert counter.counts == {}
    deliver(session, consumer, 4, b"kills the process", redelivered=True, message_id="m1")
    clock.run()
    assert calls == [1, 2, 4]


class Died(BaseException):
    """The process dies in the handler (os._exit in the real service): nothing runs after."""


def test_a_poison_message_spends_only_its_own_delivery_limit_not_its_burst_neighbours():
    counter = MemoryDeliveryCounter()
    handled: list[bytes] = []

    def handler(d: m.Delivery) -> list[m.Outgoing]:
        if d.body == b"poison":
            raise Died
        handled.append(d.body)
        return [out(d.body)]

    consumer = m.Consumer("order_placed", handler)
    bodies = [b"poison"] + [b"valid-%d" % i for i in range(5)]
    for crash in range(1, 6):  # five crashes, each burst shared with the valid orders
        session, ch, clock = make_session(counter=counter, delivery_limit=5)
        for tag, body in enumerate(bodies, start=1):
            deliver(session, consumer, tag, body, redelivered=crash > 1, message_id=body.decode())
        with pytest.raises(Died):
            clock.run()
        assert handled == [] and ch.published == []
        # Only the message in hand when the process died was charged.
        assert set(counter.counts.values()) <= {crash - 1}
        assert len(counter.counts) == (1 if crash > 1 else 0)
    session, ch, clock = make_session(counter=counter, delivery_limit=5)
    for tag, body in enumerate(bodies, start=1):
        deliver(session, consumer, tag, body, redelivered=True, message_id=body.decode())
    clock.run()
    dead = ch.published[0]
    assert dead.exchange == topo.DEAD_LETTERS and dead.body == b"poison"
    assert "delivery limit exceeded (6 deliveries" in dead.properties.headers[h.H_REASON]
    for seq in range(1, len(bodies) + 1):  # each redelivery is settled before the next
        session.on_confirm(confirm(seq))
        clock.run()
    assert handled == bodies[1:]
    assert [o.body for o in ch.published] == bodies
    assert ch.acks[-1] == (len(bodies), False) and counter.counts == {}


def test_a_redelivered_message_is_handled_alone_and_nothing_else_until_it_is_settled():
    batches: list[list[int]] = []
    current: list[int] = []

    @contextmanager
    def unit_of_work():
        current.clear()
        yield
        batches.append(list(current))

    def handler(d: m.Delivery) -> list[m.Outgoing]:
        current.append(d.delivery_tag)
        return [out(d.body)]

    consumer = m.Consumer("order_placed", handler, unit_of_work=unit_of_work)
    session, ch, clock = make_session()
    for tag, again in ((1, False), (2, False), (3, True), (4, False), (5, True), (6, False)):
        deliver(session, consumer, tag, bytes([tag]), redelivered=again)
    clock.run()
    assert batches == [[1, 2], [3]]  # 4 waits: 3 is in hand until its output is confirmed
    session.on_confirm(confirm(3))
    clock.run()
    assert batches == [[1, 2], [3], [4], [5]]
    session.on_confirm(confirm(5))
    clock.run()
    assert batches == [[1, 2], [3], [4], [5], [6]]
    session.on_confirm(confirm(6, multiple=True))
    assert ch.acks[-1][0] == 6 and not session.unsettled


def test_attempts_from_an_untrusted_header_never_raise():
    assert h.attempts_of({h.H_ATTEMPTS: 2}) == 2
    assert h.attempts_of({h.H_ATTEMPTS: "3"}) == 3
    for hostile in ("lots", "9" * 5000, -1, 1e30, True, None, [1], {"a": 1}, 2 ** 70):
        assert h.attempts_of({h.H_ATTEMPTS: hostile}) == 0
    assert h.attempts_of(None) == 0


def test_a_reason_never_echoes_unbounded_input():
    reason = h.bounded("unknown item: " + "x" * 80_000)
    assert len(reason) <= h.MAX_REASON_CHARS and "80014 chars" in reason


def test_a_far_future_timestamp_header_decodes_instead_of_killing_the_connection():
    class FarFuture(dt.datetime):
        def utctimetuple(self):
            return time.struct_time((9999, 1, 10 ** 12, 0, 0, 0, 0, 1, 0))

    raw = b"".join(pika.BasicProperties(headers={"t": FarFuture(2000, 1, 1)}).encode())
    pika_compat.install()
    decoded = pika.BasicProperties()
    decoded.decode(raw)
    assert isinstance(decoded.headers["t"], int) and decoded.headers["t"] > 10 ** 16


def test_a_commit_that_fails_leaves_no_transaction_open(tmp_path):
    class Strict(SqliteStore):
        schema = """
        CREATE TABLE IF NOT EXISTS parent (id INTEGER PRIMARY KEY);
        CREATE TABLE IF NOT EXISTS child (id INTEGER PRIMARY KEY, parent INTEGER
            REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);
        """

    store = Strict(tmp_path / "s.sqlite")
    store.db().execute("PRAGMA foreign_keys=ON")
    with pytest.raises(sqlite3.IntegrityError), store.transaction() as db:
        db.execute("INSERT INTO child(id, parent) VALUES (1, 42)")  # fails only at COMMIT
    assert not store.db().in_transaction
    with store.transaction() as db:  # the next batch starts clean
        db.execute("INSERT INTO parent(id) VALUES (1)")
    assert store.db().execute("SELECT COUNT(*) FROM parent").fetchone()[0] == 1


def test_sqlite_durability_is_full_unless_asked(tmp_path):
    full = SqliteStore(tmp_path / "a.sqlite")
    normal = SqliteStore(tmp_path / "b.sqlite", synchronous="NORMAL")
    assert full.db().execute("PRAGMA synchronous").fetchone()[0] == 2
    assert normal.db().execute("PRAGMA synchronous").fetchone()[0] == 1


def test_every_consumed_queue_has_retry_tiers():
    t = topo.build_topology("classic")
    names = set(t.queue_names())
    for queue in topo.RETRIED_QUEUES:
        policy = RetryPolicy(queue=queue)
        assert [policy.next_queue(a) for a in (1, 2, 3, 4)][-1] is None
        assert all(policy.next_queue(a) in names for a in (1, 2, 3))


def test_events_never_carry_non_standard_json():
    from lab_services import events
    with pytest.raises(ValueError):
        events.encode({"total_amount": float("inf")})
    assert json.loads(events.encode({"a": 1.5})) == {"a": 1.5}


def test_a_header_nested_too_deep_to_decode_is_skipped_not_fatal():
    import sys
    deep: dict = {}
    cur = deep
    for _ in range(900):
        cur["x"] = {}
        cur = cur["x"]
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10_000)  # only to build the frame a foreign client would send
    try:
        raw = b"".join(pika.BasicProperties(headers={"deep": deep, "ok": 1}).encode())
    finally:
        sys.setrecursionlimit(limit)
    pika_compat.install()
    decoded = pika.BasicProperties()
    decoded.decode(raw)
    assert decoded.headers["ok"] == 1
    depth, node = 0, decoded.headers["deep"]
    while isinstance(node, dict):
        node, depth = node["x"], depth + 1
    assert node == "[nested too deep]" and depth <= h.MAX_DECODE_DEPTH


def test_copies_drop_broker_owned_headers_and_stay_small():
    hostile = {"x-death": [1, 2], "x-first-death-queue": "q", "CC": ["a"], "keep": "me",
               **{f"big{i}": "y" * 4000 for i in range(32)}}
    assert h.clean_headers(hostile) == {}  # too big as a whole: the reason matters more
    small = h.clean_headers({"x-death": [1, 2], "CC": ["a"], "keep": "me"})
    assert small == {"keep": "me"}


@pytest.mark.parametrize(("raw", "field"), [
    (b'{"event_id":"e","event_type":"OrderPlaced","timestamp":"2024-01-01T00:00:00Z",'
     b'"order_id":"o","user_id":"u","items":[{"item_id":"i","quantity":1,"price":1}],'
     b'"total_amount":' + b"1" * 401 + b"}", "total_amount"),
    (b'{"event_id":"e","event_type":"InventoryReserved","timestamp":"2024-01-01T00:00:00Z",'
     b'"order_id":"o","items":[{"item_id":"i","quantity":1,"price":1}],"reason":1e400}',
     "body"),
    (b'{"event_id":"e","event_type":"InventoryReserved","timestamp":"2024-01-01T00:00:00Z",'
     b'"order_id":"o","items":[{"item_id":"i","quantity":1,"price":1}],"reason":{"a":1}}',
     "reason"),
    (b'{"event_id":"e","event_type":"InventoryFailed","timestamp":"2024-01-01T00:00:00Z",'
     b'"order_id":"o","items":[{"item_id":"i","quantity":1,"price":1}],"reason":"r",'
     b'"order_timestamp":-1}', "order_timestamp"),
])
def test_events_with_out_of_range_fields_are_malformed_not_crashes(raw, field):
    from lab_services import events
    with pytest.raises(InvalidEvent) as err:
        events.parse_event(raw)
    assert err.value.reason.startswith(field)


@pytest.mark.parametrize("env", [
    {"AMQP_URL": "amqp://h:99999/"}, {"AMQP_URL": "amqp://h/?heartbeat=abc"},
    {"AMQP_URL": "http://h/"}, {"INITIAL_STOCK": "-5"}, {"INITIAL_STOCK": "item_1=lots"},
    {"PREFETCH": "0"}, {"WORK_MS": "nan"}, {"IDEMPOTENCY": "maybe"},
    {"ORDER_PUBLISH": "later"}, {"SQLITE_SYNCHRONOUS": "OFF"}, {"LAB_CRASH_AT": "never:x"},
    {"DELIVERY_LIMIT": "9" * 50},
])
def test_bad_settings_are_refused_at_start_naming_the_variable(env):
    from lab_services.settings import SettingsError, load
    with pytest.raises(SettingsError) as err:
        load("inventory", env)
    assert str(err.value).startswith(next(iter(env)).split("_URL")[0])


def test_every_reconnect_attempt_closes_its_io_loop(monkeypatch):
    from lab_services import bus as bus_module
    from lab_services.settings import BusSettings

    loops = []

    class FailingConnection:
        """Fails to open at once, as against a broker that is down."""

        def __init__(self, _params, on_open_callback, on_open_error_callback,
                     on_close_callback):
            self.ioloop = SimpleNamespace(closed=False)
            self.ioloop.start = lambda: on_open_error_callback(self, OSError("refused"))
            self.ioloop.stop = lambda: None

            def close():
                self.ioloop.closed = True
            self.ioloop.close = close
            loops.append(self.ioloop)

    monkeypatch.setattr(bus_module.pika_compat, "CoalescingConnection", FailingConnection)
    b = bus_module.Bus(BusSettings(reconnect_max_delay=0.05), name="t")
    b.start()
    deadline = time.monotonic() + 10
    while len(loops) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    b.close()
    assert len(loops) >= 5 and all(loop.closed for loop in loops[:-1])


def test_the_one_backoff_doubles_up_to_its_cap_and_never_overflows():
    assert backoff_s(0) == 0.0
    assert [backoff_s(n, initial=0.25, cap=5.0) for n in range(1, 7)] == [
        0.25, 0.5, 1.0, 2.0, 4.0, 5.0]
    assert backoff_s(10 ** 6, initial=0.25, cap=2.0) == 2.0  # a long outage: still the cap


def test_pika_patches_are_applied_only_to_the_pika_they_were_written_for():
    # pyproject pins pika 1.x; the patches must be live there, and the bus must use them.
    assert pika.__version__.startswith("1.") and pika_compat.PATCHABLE
    pika_compat.install()
    assert pika.data.decode_value is not pika_compat.pika_decode_value
    assert "_output_marshaled_frames" in vars(pika_compat.CoalescingConnection)
