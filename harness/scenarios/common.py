"""What several scenarios share: a broker when none is given, barriers, finishing a run."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from harness import amqp
from harness.invariants import Check, Verdict, check_run
from harness.load import LoadSpec
from harness.reporting.results import ScenarioResult
from harness.run_state import RunState
from harness.runner import Run
from lab_services import topology as topo

log = logging.getLogger(__name__)

POISON_USER = "poison-pill"
# Stock large enough that ordinary load never runs out: these scenarios are about
# messaging, and a sold-out item would only blur their counts.
PLENTY = "100000"


@contextlib.contextmanager
def broker_for(broker: Any) -> Iterator[Any]:
    """The given broker, or one opened with open_broker("auto") and closed after."""
    if broker is not None:
        yield broker
        return
    from harness.brokers import open_broker
    with open_broker("auto") as opened:
        yield opened


def facts(run: Run, state: RunState) -> dict[str, Any]:
    """What the causes read besides the state: the fault timeline, health, deaths, the
    messages still waiting in each consumed queue (a live but stalled consumer leaves some),
    and what could not be read (a cause never cites a ledger or a DLQ it did not see)."""
    return {"timeline": list(run.timeline.rows), "health": dict(state.health),
            "died": dict(run.died), "queues_left": queues_left(run),
            "unknown": sorted(state.unknown)}


def queues_left(run: Run) -> dict[str, int]:
    """Messages each consumed queue still holds: ready and unacked (held by a consumer that
    never settles them) where the management API tells, else ready only."""
    if getattr(run.broker, "management_url", None):
        from harness.brokers import management
        try:
            rows = management.queues(run.broker, run.lab.vhost or "/")
            return {q["name"]: int(q.get("messages") or 0) for q in rows
                    if q["name"] in topo.QUEUE_OWNERS}
        except Exception as exc:  # then the passive declares below
            log.debug("management queues: %s", exc)
    left: dict[str, int] = {}
    for queue in topo.QUEUE_OWNERS:
        try:
            left[queue] = amqp.depth(run.lab.amqp_url, queue)
        except Exception:  # a queue the implementation never declared: nothing waiting there
            continue
    return left


def judge(run: Run, state: RunState, accepted: list[str], *,
          more_facts: dict[str, Any] | None = None, **expect: Any) -> Verdict:
    """The one checker on a scenario's end state, with everything it can use: the orders
    (outcomes line by line), the ledger snapshots taken before each kill, the facts (and
    what only the scenario saw, `more_facts`, for the causes to read)."""
    return check_run(accepted=accepted, inventory=state.inventory, ledger=state.ledger,
                     notifications=state.notifications, dlq=state.dlq, orders=state.orders,
                     ledger_snapshots=run.faults.ledger_snapshots or None,
                     facts={**facts(run, state), **(more_facts or {})}, **expect)


def accepted_ids(load: Any) -> list[str]:
    """The order ids a load frame's accepted rows got."""
    return load.loc[load["accepted"], "order_id"].tolist()


def finish(run: Run, result: ScenarioResult) -> ScenarioResult:
    """Attach the timeline (and, for a graded run, the services-stayed-up check), write the
    run folder and log the summary."""
    if result.checks:
        result.checks.append(stayed_up(run, result.name, result.checks[0].tried))
    result.timeline = run.timeline.frame()
    result.write(run.run_dir)
    log.info("%s", result.text())
    return result


def stayed_up(run: Run, scenario: str, tried: str) -> Check:
    """A check that no service process died by itself during the scenario."""
    if not run.died:
        return Check(scenario, "services stay up", tried, "no service process dies by itself",
                     "every service was still running at the end", True)
    name, (code, tail) = next(iter(run.died.items()))
    return Check(scenario, "services stay up", tried, "no service process dies by itself",
                 f"the {name} process exited (code {code}) during the scenario, so what it "
                 "held could not be read: a service must survive bad input and broker loss, "
                 "and never exit on its own", False,
                 {"died": sorted(run.died), "log_tail": tail})


def barrier(run: Run, user: str = "sentinel", timeout: float = 30) -> str:
    """Place one order and wait for its notification: everything queued before it is done.

    One consumer takes `order_placed` in order, so when this order is notified every
    message published before it has been handled.
    """
    r = run.lab.place_order(user, [{"item_id": "item_5", "quantity": 1, "price": 2.0}])
    r.raise_for_status()
    order_id = r.json()["order_id"]
    run.lab.wait_notified([order_id], timeout=timeout)
    return order_id


def place_some(run: Run, n: int, seed: int) -> list[dict[str, Any]]:
    """Place n orders, wait until each is notified, and return them as the order API has them."""
    load = run.place(LoadSpec(orders=n, concurrency=4, seed=seed, progress=False))
    ids = load.loc[load["accepted"], "order_id"].tolist()
    run.lab.wait_notified(ids, timeout=30 + n / 5)
    return [run.lab.get("order", f"/order/{i}") for i in ids]
