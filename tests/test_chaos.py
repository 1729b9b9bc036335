"""Chaos: the schedule is data and reproducible, the checker can say no to each invariant on
its own, and on a real broker a broken design is caught while the lab's own is valid."""

from __future__ import annotations

import copy
import json
from collections import Counter

import pytest

from harness.chaos.check import JUDGED, ChaosObservation, ClientRequest, check_chaos
from harness.chaos.messages import (
    KINDS,
    TAG_HEADER,
    malformed_message,
    poison_message,
    tag,
    tag_of,
)
from harness.chaos.schedule import (
    CRASH,
    FLOOD,
    HOSTILE,
    KILL,
    MEMORY_ALARM,
    MEMORY_CLEAR,
    POISON,
    START,
    STORM,
    ScheduleSpec,
    draw_schedule,
    flood_messages,
    malformed_count,
    poison_orders,
    read_schedule,
    write_schedule,
)
from harness.invariants import INVARIANTS
from lab_services import events
from lab_services.topology import owner_of

# ---- the schedule ------------------------------------------------------------------------


def test_the_same_seed_draws_the_same_schedule_and_another_seed_another():
    spec = ScheduleSpec(seed=7, window_s=20, orders=2000)
    assert draw_schedule(spec) == draw_schedule(ScheduleSpec(seed=7, window_s=20, orders=2000))
    assert draw_schedule(spec) != draw_schedule(ScheduleSpec(seed=8, window_s=20, orders=2000))


def test_a_schedule_holds_every_fault_the_lab_promises(tmp_path):
    schedule = draw_schedule(ScheduleSpec(seed=3, window_s=20, orders=2000, kills_per_service=3))
    assert [f.at_s for f in schedule] == sorted(f.at_s for f in schedule)
    kills = Counter(f.target for f in schedule if f.action == KILL)
    starts = Counter(f.target for f in schedule if f.action == START)
    assert kills == starts == {"order": 3, "inventory": 3, "notification": 3, "broker": 1}
    assert Counter(f.action for f in schedule)[STORM] == 2
    alarm = next(f for f in schedule if f.action == MEMORY_ALARM)
    clear = next(f for f in schedule if f.action == MEMORY_CLEAR)
    assert alarm.params["watermark"] < 0.001 and clear.params["watermark"] == 0.4
    assert clear.at_s > alarm.at_s
    # The alarm never meets a broker that is down or still booting.
    broker_kill = next(f for f in schedule if f.action == KILL and f.target == "broker")
    assert not (broker_kill.at_s - 4 <= alarm.at_s <= broker_kill.at_s + 12)
    # A tenth of order.placed is malformed, of every kind, each tag once.
    flood = flood_messages(schedule)
    assert len(flood) == malformed_count(2000) and 0.09 <= len(flood) / (2000 + len(flood)) <= 0.11
    assert {k for _n, k in flood} == set(KINDS) and len(KINDS) >= 8
    assert sorted(n for n, _k in flood) == list(range(len(flood)))
    write_schedule(schedule, tmp_path)
    assert read_schedule(tmp_path / "schedule.json") == schedule
    assert (tmp_path / "schedule.csv").read_text().count("\n") == len(schedule) + 1


def test_without_a_stoppable_broker_no_broker_fault_is_drawn():
    schedule = draw_schedule(ScheduleSpec(seed=1, window_s=10, orders=100, broker_faults=False))
    assert not [f for f in schedule if f.target == "broker"]
    assert {f.action for f in schedule} >= {KILL, START, STORM, FLOOD}


def test_a_poison_order_is_drawn_from_the_seed_without_moving_the_other_faults():
    spec = ScheduleSpec(seed=4, window_s=20, orders=600)
    schedule = draw_schedule(spec)
    poison = [f for f in schedule if f.action == POISON]
    assert len(poison) == 1 and 2.0 <= poison[0].at_s <= 17.0
    assert poison_orders(schedule) == {poison[0].params["order_id"]: HOSTILE}
    # The poison rows have a generator of their own: without them every other row is the same.
    without = draw_schedule(ScheduleSpec(seed=4, window_s=20, orders=600, poisons=0))
    assert [f for f in schedule if f.action != POISON] == without
    crash = draw_schedule(ScheduleSpec(seed=4, window_s=20, orders=600, poison_kind=CRASH))
    assert poison_orders(crash) == {poison[0].params["order_id"]: CRASH}
    with pytest.raises(ValueError):
        draw_schedule(ScheduleSpec(seed=4, window_s=20, orders=600, poison_kind="acid"))


def test_the_hostile_poison_looks_valid_but_for_its_quantity_and_the_crash_one_is_valid():
    order_id = poison_orders(draw_schedule(ScheduleSpec(seed=1, window_s=8, orders=200)))
    (oid,) = order_id
    assert events.check_id(oid, "order_id") == oid
    body, props = poison_message(HOSTILE, oid)
    payload = json.loads(body)
    quantity = payload["items"][0]["quantity"]
    assert isinstance(quantity, int) and quantity == 2**63 and props.correlation_id == oid
    with pytest.raises(events.InvalidEvent, match="quantity"):
        events.parse_event(body, expect=(events.ORDER_PLACED,))
    assert events.parse_event(poison_message(CRASH, oid)[0]).order_id == oid


# ---- the hostile messages --------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_every_malformed_message_carries_its_tag_where_the_checker_looks(kind):
    body, props = malformed_message(kind, 42)
    assert props.headers[TAG_HEADER] == tag(42) and props.message_id.startswith(tag(42))
    assert len(props.message_id) <= 255
    # Found by header, by message_id alone, or (where the body survives) by the body alone.
    assert tag_of({"headers": {TAG_HEADER: tag(42)}}) == tag(42)
    assert tag_of({"message_id": props.message_id}) == tag(42)
    assert tag_of({"message_id": tag(421)}) != tag(42)


def test_the_kinds_are_what_they_say():
    body = dict((k, malformed_message(k, 1)[0]) for k in KINDS)
    assert len(body["oversize"]) > 80 * 1024
    assert b"1" + b"0" * 400 in body["huge_quantity"]
    assert json.loads(body["quantity_1e308"])["items"][0]["quantity"] == 1e308
    assert len(json.loads(body["long_order_id"])["order_id"]) > 255
    with pytest.raises(UnicodeDecodeError):
        body["invalid_utf8"].decode()
    with pytest.raises(RecursionError):
        json.loads(body["deep_nesting"])
    assert malformed_message("float_header", 1)[1].headers["x-chaos-float"] == 1e30


# ---- the checker, on synthetic data ----------------------------------------------------------


def _good() -> ChaosObservation:
    """Three orders through a run in which nothing went wrong; one failed for want of stock."""
    items = {"A": [{"item_id": "item_1", "quantity": 2, "price": 1.0}],
             "B": [{"item_id": "item_2", "quantity": 1, "price": 1.0}],
             "C": [{"item_id": "item_2", "quantity": 5, "price": 1.0}]}
    status = {"A": "RESERVED", "B": "RESERVED", "C": "FAILED"}
    requests = [ClientRequest("key-A", "u-A", items["A"], [None, None, 201], ["A"]),
                ClientRequest("key-B", "u-B", items["B"], [202], ["B"]),
                ClientRequest("key-C", "u-C", items["C"], [201], ["C"])]
    orders = [{"order_id": o, "user_id": f"u-{o}", "items": items[o], "status": status[o]}
              for o in "ABC"]
    return ChaosObservation(
        requests=requests, server_orders=orders, lookups={o["order_id"]: o for o in orders},
        notifications=[{"order_id": o, "status": status[o]} for o in "ABC"],
        inventory={"item_1": {"initial": 10, "stock": 8}, "item_2": {"initial": 3, "stock": 2}},
        ledger={"reservations": [{"order_id": "A", "item_id": "item_1", "quantity": 2},
                                 {"order_id": "B", "item_id": "item_2", "quantity": 1}],
                "outcomes": [{"order_id": o, "reserved": status[o] == "RESERVED"}
                             for o in "ABC"]},
        dlq=[{"reason": "body: not valid JSON", "message_id": tag(0), "headers": {}}],
        malformed_tags={tag(0)}, queues_left={"order_placed": 0, "order_status": 0},
        health={"order": {"status": "ok"}, "inventory": {"status": "ok"},
                "notification": {"status": "ok"}})


def _break(obs: ChaosObservation, how: str) -> None:
    if how == "lost":
        obs.notifications.pop(0)
    elif how == "notified_twice":
        obs.notifications.append(dict(obs.notifications[1]))
    elif how == "ledger_twice":
        r = dict(obs.ledger["reservations"][0])
        obs.ledger["reservations"].append(r)
        obs.inventory["item_1"]["stock"] -= r["quantity"]
    elif how == "stock_vs_ledger":
        obs.inventory["item_2"]["stock"] -= 1
    elif how == "stock_vs_outcomes":
        obs.ledger["outcomes"][1]["reserved"] = False
    elif how == "oversold":
        # An inventory that never checks stock: C (5 of item_2, 2 left) reserved anyway.
        obs.ledger["reservations"].append({"order_id": "C", "item_id": "item_2", "quantity": 5})
        obs.inventory["item_2"]["stock"] -= 5
        obs.ledger["outcomes"][2]["reserved"] = True
        obs.notifications[2]["status"] = "RESERVED"
        obs.lookups["C"]["status"] = "RESERVED"
    elif how == "partial_failed":
        # A FAILED order that kept the stock of an earlier line.
        obs.ledger["reservations"].append({"order_id": "C", "item_id": "item_1", "quantity": 1})
        obs.inventory["item_1"]["stock"] -= 1
    elif how == "failed_with_stock":
        # C (5 of item_2) FAILED, yet 9 of item_2 were left: it should have been reserved.
        obs.inventory["item_2"] = {"initial": 10, "stock": 9}
    elif how == "valid_in_dlq":
        obs.dlq.append({"reason": "IntegrityError: UNIQUE constraint failed",
                        "body": json.dumps({"order_id": "A"}), "headers": {}})
    elif how == "ledger_forgot":
        obs.ledger_snapshots = [[{"order_id": "A", "item_id": "item_1", "quantity": 2},
                                 {"order_id": "Q", "item_id": "item_3", "quantity": 1}]]
    elif how == "duplicate_order":
        obs.server_orders.append({"order_id": "A2", "user_id": "u-A", "items": [],
                                  "status": "PENDING"})
    elif how == "duplicate_answer":
        obs.requests[0].order_ids.append("A2")
    elif how == "ghost_unaccepted":
        obs.notifications.append({"order_id": "Z", "status": "FAILED"})
    elif how == "ghost_404":
        obs.lookups["B"] = 404
    elif how == "ghost_no_answer":
        obs.lookups["C"] = -1
    elif how == "ghost_outcome_only":
        obs.ledger["outcomes"].append({"order_id": "Y", "reserved": False})
    elif how == "status_mismatch":
        obs.lookups["A"]["status"] = "PENDING"
    elif how == "malformed_missing":
        obs.dlq.clear()
    elif how == "malformed_without_reason":
        obs.dlq[0]["reason"] = None
    elif how == "stalled":
        obs.queues_left["order_placed"] = 57
    elif how == "unhealthy":
        obs.health["inventory"] = None
    elif how == "http_500":
        obs.requests[2].statuses.insert(0, 500)
    elif how == "http_503":
        obs.requests[2].statuses.insert(0, 503)
        obs.requests[0].statuses = [201]
    elif how == "client_error":
        obs.requests[2].statuses.insert(0, 422)
    elif how == "gave_up":
        obs.requests.append(ClientRequest("key-D", "u-D", [], [None, None, None], []))
    elif how == "poison_missing":
        obs.poison = {"ORD-19990101-p00000100": "crash"}
    elif how == "poison_without_reason":
        obs.poison = {"ORD-19990101-p00000100": "hostile"}
        obs.dlq.append({"reason": None, "body": json.dumps({"order_id": "ORD-19990101-p00000100"}),
                        "headers": {}})
    elif how == "poison_loop":
        obs.redeliveries = {"order_placed": (4000, 2), "order_status": (0, 0)}
    else:
        raise ValueError(how)


BREAKS = {"lost": "lost", "notified_twice": "duplicate_notifications",
          "ledger_twice": "double_reservations", "stock_vs_ledger": "stock_conserved",
          "stock_vs_outcomes": "outcomes_vs_ledger", "partial_failed": "outcomes_vs_ledger",
          "oversold": "stock_negative", "valid_in_dlq": "valid_in_dlq",
          "failed_with_stock": "failed_iff_short",
          "ledger_forgot": "ledger_forgot",
          "duplicate_order": "duplicate_orders", "duplicate_answer": "duplicate_orders",
          "ghost_unaccepted": "ghosts", "ghost_404": "ghosts", "ghost_no_answer": "ghosts",
          "ghost_outcome_only": "ghosts",
          "status_mismatch": "status_mismatch",
          "malformed_missing": "malformed_not_dead_lettered",
          "malformed_without_reason": "malformed_not_dead_lettered",
          "stalled": "stalled_queues", "unhealthy": "unhealthy_services",
          "http_500": "http_5xx", "client_error": "client_errors", "gave_up": "gave_up",
          "poison_missing": "poison_not_dead_lettered",
          "poison_without_reason": "poison_not_dead_lettered", "poison_loop": "poison_loop"}


def test_every_invariant_has_a_break_that_trips_it():
    assert set(BREAKS.values()) == set(JUDGED)
    assert set(JUDGED) <= set(INVARIANTS)  # one record: every judged key has its words


def test_a_run_where_nothing_went_wrong_is_valid():
    verdict = check_chaos(_good())
    assert verdict.valid, verdict.problems
    c = verdict.counts
    assert (c["accepted"], c["notified"], c["reserved"], c["failed"]) == (3, 3, 2, 1)
    assert c["accepted_202"] == 1 and c["retried"] == 1


@pytest.mark.parametrize("how", sorted(BREAKS))
def test_each_invariant_alone_makes_the_run_invalid(how):
    obs = copy.deepcopy(_good())
    _break(obs, how)
    verdict = check_chaos(obs)
    assert not verdict.valid
    assert verdict.evidence[BREAKS[how]]
    others = [k for k in set(BREAKS.values()) if k != BREAKS[how] and verdict.evidence.get(k)]
    # Only the broken invariant, except where one fault honestly breaks two.
    allowed = {"duplicate_order": {"ghosts"}, "duplicate_answer": {"lost", "ghosts"},
               # B FAILED with its line still in the ledger: and its stock was there.
               "stock_vs_outcomes": {"failed_iff_short"}}
    assert set(others) <= allowed.get(how, set()), (how, others, verdict.problems)


def test_a_retried_503_is_the_contracts_answer_reported_not_judged():
    """POST /order answers 503 "retry" while the broker is away (direct mode): no finding."""
    obs = copy.deepcopy(_good())
    _break(obs, "http_503")
    verdict = check_chaos(obs)
    assert verdict.valid, verdict.problems
    assert verdict.counts["http_5xx"] == 0 and verdict.counts["answered_503"] == 1


def test_a_503_that_never_gave_way_is_a_request_given_up():
    obs = copy.deepcopy(_good())
    obs.requests.append(ClientRequest("key-D", "u-D", [], [503] * 5, []))
    verdict = check_chaos(obs)
    assert not verdict.valid and verdict.evidence["gave_up"] == ["key-D"]
    assert not verdict.evidence["http_5xx"]


def test_an_order_service_that_leaves_order_status_unconsumed_is_not_failed_for_it():
    """order_status is optional: statuses stay PENDING and its queue fills, by design."""
    obs = copy.deepcopy(_good())
    for found in obs.lookups.values():
        found["status"] = "PENDING"
    obs.queues_left["order_status"] = 3
    verdict = check_chaos(obs)
    assert verdict.valid, verdict.problems
    assert verdict.counts["status_consumed"] is False
    # One status the service did update: it consumes, and a stale one is a finding again.
    obs.lookups["C"]["status"] = "FAILED"
    verdict = check_chaos(obs)
    assert verdict.evidence["status_mismatch"] == ["A", "B"]


def test_a_409_key_in_progress_that_the_client_retried_is_no_error():
    obs = copy.deepcopy(_good())
    obs.requests[2].statuses.insert(0, 409)
    verdict = check_chaos(obs)
    assert verdict.valid and verdict.counts["answers"]["409"] == 1


def test_a_malformed_message_dead_lettered_twice_is_reported_not_judged():
    obs = copy.deepcopy(_good())
    obs.dlq.append(dict(obs.dlq[0]))
    verdict = check_chaos(obs)
    assert verdict.valid and verdict.counts["dlq_repeated"] == 1


def test_a_queue_of_a_dead_service_is_unhealthy_not_stalled():
    obs = copy.deepcopy(_good())
    obs.queues_left["order_placed"] = 5
    obs.health["inventory"] = None
    c = check_chaos(obs).counts
    assert c["stalled_queues"] == 0 and c["unhealthy_services"] == 1


def test_retry_tiers_belong_to_the_queue_they_feed():
    assert owner_of("order_placed.retry.2") == "inventory"
    assert owner_of("inventory_failed") == "notification"
    assert owner_of("dlq") is None and owner_of("order_placedX") is None


# ---- on a real broker ------------------------------------------------------------------------

NO_FAULTS = {"kills_per_service": 0, "broker_kills": 0, "memory_alarms": 0, "storms": 0,
             "floods": 0, "poisons": 0}


def _summary(result) -> dict:
    return json.loads((result.run_dir / "summary.json").read_text())


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_a_reduced_chaos_run_on_a_real_broker_is_valid(broker, tmp_path, seed):
    from harness.scenarios.chaos import chaos
    result = chaos(broker, seed=seed, orders=240, rate=30, out=tmp_path, progress=False)
    s = _summary(result)
    # The run did what it says: every fault of the schedule happened, on real traffic.
    assert s["faults_injected"]["kill broker"] == 1 and s["faults_injected"]["start broker"] == 1
    for service in ("order", "inventory", "notification"):
        assert s["faults_injected"][f"kill {service}"] == 2
    assert s["published"]["malformed"] == s["malformed_injected"] >= len(KINDS)
    assert s["published"]["duplicates"] > 0
    assert {"schedule.csv", "schedule.json", "faults.csv", "queue_depth.png", "throughput.png",
            "latency.png", "outcome.png", "orders.csv", "dlq.csv"} <= set(s["files"])
    # The lab's crash poison (issue 18): the inventory crashed on it until its delivery limit
    # dead-lettered it, with a reason, and no valid order was dead-lettered with it.
    assert s["published"]["poison"] == 1 and s["poison"]["kind"] == CRASH
    assert s["poison"]["crash_restarts"] >= 1, s["poison"]
    assert s["poison"]["dead_lettered"] == 1 and s["poison_not_dead_lettered"] == 0
    assert s["valid_in_dlq"] == 0 and s["poison_loop"] == 0
    assert result.valid, result.verdict.problems


@pytest.mark.broker
@pytest.mark.slow
def test_without_idempotency_the_duplicate_storm_is_caught_reserving_twice(broker, tmp_path):
    from harness.scenarios.chaos import chaos
    result = chaos(broker, seed=5, orders=120, rate=30, idempotency="off",
                   fault_mix={**NO_FAULTS, "storms": 3}, out=tmp_path, progress=False)
    c = result.verdict.counts
    assert not result.valid
    assert c["reserved_twice"] > 0 and c["double_reservations"] > 0, result.verdict.problems
    assert _summary(result)["valid"] is False


@pytest.mark.broker
@pytest.mark.slow
def test_the_direct_design_through_a_broker_kill_is_judged_on_ghosts_not_on_its_503s(
        broker, tmp_path):
    # Publish first, store after (ORDER_PUBLISH=direct): a broker outage refuses orders with
    # the contract's 503 (no 5xx finding: the client retries), and only an order processed
    # although it was refused or never stored (a ghost) breaks it. Whether a kill lands
    # while an event is on the wire is timing; test_dualwrite makes that crash on purpose.
    from harness.scenarios.chaos import chaos
    result = chaos(broker, seed=3, orders=150, rate=30, extra_env={"ORDER_PUBLISH": "direct"},
                   fault_mix={**NO_FAULTS, "broker_kills": 1}, out=tmp_path, progress=False)
    c = result.verdict.counts
    assert c["answered_503"] > 0 and c["http_5xx"] == 0, c
    assert result.valid == (c["ghosts"] == 0), result.verdict.problems


def _unbind(queue: str, exchange: str, routing_key: str):
    """A `prepare` hook that removes one binding of the running lab: a broken system."""
    def prepare(run) -> None:
        from harness import amqp
        with amqp.channel(run.lab.amqp_url, confirm=False) as ch:
            ch.queue_unbind(queue, exchange, routing_key=routing_key)
    return prepare


def _unbind_queue(queue: str):
    """A `prepare` hook that removes every binding of one queue (an implementation may
    route to it with keys of its own: one binding is not enough)."""
    def prepare(run) -> None:
        from harness import amqp
        from lab_services import topology
        with amqp.channel(run.lab.amqp_url, confirm=False) as ch:
            for b in topology.build_topology().bindings:
                if b.queue == queue:
                    ch.queue_unbind(queue, b.exchange, routing_key=b.routing_key)
    return prepare


@pytest.mark.broker
@pytest.mark.slow
def test_outcomes_that_never_reach_the_notifier_are_caught_as_lost(broker, tmp_path):
    from harness.scenarios.chaos import chaos
    from lab_services import topology as topo
    result = chaos(broker, seed=4, orders=40, rate=20, fault_mix=NO_FAULTS, settle_s=10,
                   prepare=_unbind_queue(topo.QUEUE_INVENTORY_RESERVED), out=tmp_path,
                   progress=False)
    c = result.verdict.counts
    assert not result.valid and c["lost"] == c["accepted"] - c["failed"] > 0, result.verdict


@pytest.mark.broker
@pytest.mark.slow
def test_statuses_that_never_reach_the_order_service_are_caught(broker, tmp_path):
    from harness.scenarios.chaos import chaos
    from lab_services import topology as topo
    result = chaos(broker, seed=4, orders=40, rate=20, fault_mix=NO_FAULTS, settle_s=10,
                   prepare=_unbind_queue(topo.QUEUE_ORDER_STATUS),
                   out=tmp_path, progress=False)
    c = result.verdict.counts
    assert not result.valid and c["status_mismatch"] == c["accepted"] > 0, result.verdict
    assert c["lost"] == 0


@pytest.mark.broker
@pytest.mark.slow
def test_dead_letters_with_nowhere_to_go_are_caught_and_stall_their_queue(broker, tmp_path):
    from harness.scenarios.chaos import chaos
    from lab_services import topology as topo
    result = chaos(broker, seed=4, orders=40, rate=20, fault_mix={**NO_FAULTS, "floods": 1},
                   settle_s=15, prepare=_unbind(topo.DLQ, topo.DEAD_LETTERS, "#"),
                   out=tmp_path, progress=False)
    c = result.verdict.counts
    assert not result.valid
    assert c["malformed_not_dead_lettered"] == c["malformed_injected"] > 0, result.verdict
    # The inventory, healthy, keeps retrying them: order_placed never empties.
    assert c["stalled_queues"] >= 1 and c["unhealthy_services"] == 0, result.verdict


# ---- poison loops and orders decided twice (harness.scenarios.loops), pure --------------------


def test_a_poison_loop_is_many_redeliveries_of_few_waiting_messages_in_a_quiet_window():
    from harness.scenarios.loops import poison_loops
    (loop,) = poison_loops({"order_placed": (4000, 2), "order_status": (0, 0),
                            "inventory_reserved": (25, 0)})
    assert loop.startswith("order_placed: 4000 redeliveries") and "at least 2000 times" in loop
    # A burst redelivered after a crash, or messages still waiting, is no loop by itself.
    assert poison_loops({"order_placed": (20, 5)}) == poison_loops({"order_placed": (0, 3)}) == []


def test_an_order_is_decided_twice_only_by_outcomes_of_two_event_ids():
    from harness.scenarios.loops import OutcomeTap
    tap = OutcomeTap.__new__(OutcomeTap)  # the tap's pure half: no broker
    tap.events = [{"order_id": "A", "event_id": "e1"}, {"order_id": "A", "event_id": "e1"},
                  {"order_id": "B", "event_id": "e2"}, {"order_id": "B", "event_id": "e3"},
                  {"order_id": "C", "event_id": "e4"}, {"order_id": "C", "event_id": "e5"}]
    # A's copies (again after a crash, or one per queue) share their event_id.
    assert tap.decided_twice() == ["B", "C"]
    assert tap.decided_twice({"A", "B"}) == ["B"]
