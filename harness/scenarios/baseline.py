"""Baseline: place N orders and follow each to its notification (black-box); and, first,
invalid requests: each must be refused with the contract's status and publish nothing."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import requests

from harness import amqp
from harness.invariants import Check, invariant_checks
from harness.lab.deadline import DeadlineSession
from harness.lab.impl import Impl
from harness.load import LoadSpec
from harness.reporting import plots
from harness.reporting.results import ScenarioResult
from harness.runner import Run
from harness.scenarios.common import accepted_ids, broker_for, finish, judge
from harness.scenarios.registry import Scenario, register
from harness.scenarios.summary import RunSummary
from lab_services import topology as topo

PROBE_USER = "probe-invalid"
_LINE = {"item_id": "item_1", "quantity": 1, "price": 1.0}
# (what is wrong, body bytes, Content-Type, the status the contract gives it)
PROBES: tuple[tuple[str, bytes, str, int], ...] = (
    ("quantity -5", json.dumps({"user_id": PROBE_USER, "items": [
        {**_LINE, "quantity": -5}]}).encode(), "application/json", 400),
    ("quantity 0", json.dumps({"user_id": PROBE_USER, "items": [
        {**_LINE, "quantity": 0}]}).encode(), "application/json", 400),
    ("no items", json.dumps({"user_id": PROBE_USER, "items": []}).encode(),
     "application/json", 400),
    ("no user_id", json.dumps({"items": [_LINE]}).encode(), "application/json", 400),
    ("price NaN", json.dumps({"user_id": PROBE_USER, "items": [
        {**_LINE, "price": float("nan")}]}).encode(), "application/json", 400),
    ("bad JSON", b'{"user_id": "' + PROBE_USER.encode() + b'", "items": [', "application/json",
     400),
    ("not JSON (text/plain)", json.dumps({"user_id": PROBE_USER, "items": [_LINE]}).encode(),
     "text/plain", 415),
    ("body of 128 KiB", json.dumps({"user_id": PROBE_USER, "items": [_LINE],
                                    "padding": "x" * 128 * 1024}).encode(),
     "application/json", 413),
)


def baseline(broker: Any = None, *, orders: int = 200, rate: float | None = None,
             concurrency: int = 4, seed: int = 42, out: str | Path = "runs",
             progress: bool = True, impl: Impl | str | Path | None = None,
             replicas: dict[str, int] | None = None, **lab: Any) -> ScenarioResult:
    """Place N orders and follow each to its notification: the pipeline working normally."""
    with broker_for(broker) as b, Run("baseline", b, out=out, progress=progress, impl=impl,
                                      replicas=replicas, **lab) as run:
        tap = _tap(run)
        answers = _probe(run.lab.url("order"))
        load = run.place(LoadSpec(orders=orders, rate=rate, concurrency=concurrency, seed=seed))
        accepted = load.loc[load["accepted"], "order_id"].tolist()
        run.wait_notified(accepted, timeout=30 + orders / 20)
        # Valid orders placed after the probes are notified: any event a probe caused has
        # been published by now (one order service, one relay, in order).
        leaked = _untap(run, tap)
        state = run.collect()
        verdict = judge(run, state, accepted_ids(load))
        frames = run.frames(load, state)
        summary = RunSummary(**run.base_summary(load, state, verdict, frames["latency"]))
        result = ScenarioResult("baseline", summary, verdict, frames)
        result.figures = {
            "queue_depth": plots.depth_chart(frames["queue_depth"], run.timeline.frame(),
                                             title="Queue depth during the baseline run"),
            "latency_cdf": plots.latency_cdf(frames["latency"]),
        }
        refused = int((~load["accepted"]).sum())
        tried = f"placed {orders} valid orders over HTTP and waited for their notifications"
        result.checks = [
            *_probe_checks(answers, leaked),
            _accepts(tried, orders, refused, load),
            *invariant_checks("baseline", tried, verdict, chart="latency_cdf", hints={
                "lost": "{n} of the orders answered 201 were never notified ({ids}), with no "
                        "fault at all: follow one through order_placed, the inventory and "
                        "inventory_events in the service logs"}),
        ]
        return finish(run, result)


def _tap(run: Run) -> str:
    """A queue of our own bound to order.placed, to see what the order service publishes."""
    name = f"harness.tap.{uuid.uuid4().hex[:8]}"
    with amqp.channel(run.lab.amqp_url, confirm=False) as ch:
        # Expires by itself if the run dies before _untap: nothing left behind.
        ch.queue_declare(name, durable=False, arguments={"x-expires": 600_000})
        ch.queue_bind(name, topo.ORDER_EVENTS, topo.KEY_ORDER_PLACED)
    return name


def _untap(run: Run, name: str) -> list[str]:
    """Delete the tap queue; return the bodies it caught that came from a probe."""
    rows = amqp.read_queue(run.lab.amqp_url, name, remove=True)
    with amqp.channel(run.lab.amqp_url, confirm=False) as ch:
        ch.queue_delete(name)
    return [r["body"][:200] for r in rows if PROBE_USER in r["body"]]


def _probe(order_url: str) -> list[tuple[str, int, int | None]]:
    """POST every invalid request once: (what, expected status, status got or None)."""
    out = []
    with DeadlineSession() as http:
        for what, body, ctype, want in PROBES:
            try:
                got: int | None = http.post(order_url + "/order", data=body, timeout=15,
                                            headers={"Content-Type": ctype}).status_code
            except requests.RequestException:
                got = None  # the connection closed on us: no answer at all
            out.append((what, want, got))
    return out


def _probe_checks(answers: list[tuple[str, int, int | None]], leaked: list[str]) -> list[Check]:
    tried = (f"POSTed {len(answers)} invalid orders ({', '.join(a[0] for a in answers)}) "
             "to /order, with a queue of the harness's own bound to order.placed")
    wrong = [(what, want, got) for what, want, got in answers if got != want]
    refused = Check(
        "baseline", "invalid requests refused", tried,
        "400 for a bad field or bad JSON, 415 for a body that is not JSON, 413 for a body "
        "over 64 KiB",
        "every invalid request got the contract's status" if not wrong else
        f"{len(wrong)} of {len(answers)} invalid requests got another answer: "
        + "; ".join(f"{what}: {got if got is not None else 'no answer'} (expected {want})"
                    for what, want, got in wrong[:5])
        + ": validate every field of the request before storing or publishing anything",
        not wrong, {"answers": {what: got for what, _w, got in answers}})
    published = Check(
        "baseline", "invalid requests publish nothing", tried,
        "no OrderPlaced for a refused request",
        "no event was published for any invalid request" if not leaked else
        f"{len(leaked)} OrderPlaced events were published for invalid requests (e.g. "
        f"{leaked[0][:120]}): refuse before publishing", not leaked,
        {"published": leaked[:5]})
    return [refused, published]


def _accepts(tried: str, orders: int, refused: int, load: Any) -> Check:
    statuses = load["status"].value_counts(dropna=False).to_dict()
    happened = (f"all {orders} orders answered 201" if not refused else
                f"{refused} of {orders} orders were refused (statuses {statuses}): a valid "
                "order on a healthy broker must be accepted")
    return Check("baseline", "valid orders accepted", tried, "201 Created for every valid order",
                 happened, not refused, {"statuses": {str(k): int(v) for k, v in statuses.items()}})


register(Scenario("baseline", baseline, black_box=True,
                  ci_kwargs={"orders": 20},
                  rank=10,
                  summary="N orders, each followed to its notification"))
