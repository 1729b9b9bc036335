"""A queue declared by someone else with other arguments (issue 18, item 5), on a real broker.

The broker answers the lab's declaration with PRECONDITION_FAILED and closes the channel.
Nothing in the service can fix that, so it must say exactly what conflicts (log and
/health), keep retrying at a bounded rate, and recover by itself once an operator removes
the conflict: orders accepted meanwhile (202, outbox) are then published.
"""

from __future__ import annotations

import re

import pytest
import requests

from harness.amqp import channel, depth
from harness.waiting import wait_until
from lab_services import topology

pytestmark = pytest.mark.broker

CONFLICTING = {"x-queue-type": "classic", "x-max-length": 10}  # not the lab's arguments
ITEMS = [{"item_id": "item_1", "quantity": 1, "price": 1.0}]


def _health(url: str) -> tuple[int, dict]:
    r = requests.get(url + "/health", timeout=5)
    return r.status_code, r.json()


def test_a_conflicting_declaration_is_named_in_log_and_health_retried_and_recovered(make_lab):
    lab = make_lab(services=["order"])  # RECONNECT_MAX_DELAY=2 in the lab's environment
    order = lab.services["order"]
    lab.stop("order")
    with channel(lab.amqp_url, confirm=False) as ch:
        ch.queue_delete(topology.QUEUE_ORDER_STATUS)
        ch.queue_declare(topology.QUEUE_ORDER_STATUS, durable=True, arguments=CONFLICTING)
    lab.start_service("order", wait=False)

    def refused():
        try:
            status, body = _health(order.url)
        except requests.RequestException:
            return None  # not listening yet
        return (status, body) if body.get("problem") else None

    status, body = wait_until(refused, 60, "/health to name the problem",
                              detail=order.log_tail)
    assert status == 503 and body["status"] != "ok"
    problem = body["problem"]
    assert f"queue '{topology.QUEUE_ORDER_STATUS}'" in problem, problem
    assert "x-dead-letter-exchange" in problem  # the arguments the service asked for
    assert "PRECONDITION_FAILED" in problem and "inequivalent arg" in problem  # the broker's

    # Orders are still taken (outbox) while the service cannot publish.
    answers = [lab.place_order("u-conflict", ITEMS) for _ in range(3)]
    assert {r.status_code for r in answers} <= {202, 503}, [r.text for r in answers]
    accepted = [r.json()["order_id"] for r in answers if r.status_code == 202]

    # It keeps retrying, with a backoff that stops growing at the cap (2 s here).
    def capped_retries():
        log = order.log_path.read_text(errors="replace")
        delays = [float(d) for d in re.findall(r"reconnecting in ([0-9.]+)s", log)]
        refusals = log.count(f"refused to declare queue '{topology.QUEUE_ORDER_STATUS}'")
        return delays if refusals >= 5 and delays.count(2.0) >= 2 else None

    delays = wait_until(capped_retries, 60, "five refused declarations, the backoff capped",
                        detail=order.log_tail)
    assert max(delays) == 2.0

    # An operator removes the conflict: the service recovers on its own and publishes.
    with channel(lab.amqp_url, confirm=False) as ch:
        ch.queue_delete(topology.QUEUE_ORDER_STATUS)
    wait_until(lambda: _health(order.url)[0] == 200, 60, "the order service healthy again",
               detail=order.log_tail)
    assert "problem" not in _health(order.url)[1]
    wait_until(lambda: depth(lab.amqp_url, topology.QUEUE_ORDER_PLACED) == len(accepted), 30,
               f"the {len(accepted)} orders accepted meanwhile published")
    assert lab.place_order("u-conflict", ITEMS).status_code == 201
