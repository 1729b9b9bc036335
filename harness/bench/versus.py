"""The lab against another implementation (the naive one): HTTP intake and latency at 50/s.

Each measurement starts the implementation in a Lab of its own on the same broker, so the
two sides see the same node in the same run. Intake is driven by wrk (harness.bench.intake);
latency uses the Python client at a paced open-loop rate and the notifications' own
timestamps (order placed -> outcome -> notified), as harness.observe does for scenarios.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from harness import amqp
from harness.bench.intake import SHAPES, in_turn, write_script
from harness.brokers import Broker
from harness.lab import Lab, LabConfig
from harness.lab.impl import Impl
from harness.load import LoadSpec, order_mix, place_orders
from harness.observe import latency_frame, percentiles
from harness.waiting import WaitTimeout, wait_until
from lab_services import topology as topo

log = logging.getLogger(__name__)

PLENTY = "10000000"
NAIVE_SPEC = Path(__file__).resolve().parents[2] / "examples" / "naive" / "impl.toml"


def _config() -> LabConfig:
    return LabConfig(initial_stock=PLENTY, log_level="WARNING")


def _settle(lab: Lab, timeout: float) -> None:
    """Let the consumers catch up with what the last run queued (bounded; a miss is logged)."""
    try:
        wait_until(lambda: amqp.depth(lab.amqp_url, topo.QUEUE_ORDER_PLACED) == 0, timeout,
                   "order_placed drained between intake runs", interval=0.2)
    except WaitTimeout as exc:
        log.warning("%s: %s", lab.impl.name, exc)


def intake(broker: Broker, other: Impl | str | Path, folder: Path, *, seconds: float = 5.0,
           rounds: int = 3, shapes: tuple[tuple[int, int], ...] = SHAPES) -> dict[str, Any]:
    """POST /order flat out with wrk on the lab and on `other`, side by side, in turn.

    Both run whole (all three services) on the same broker for the whole measurement; per
    shape they take turns, `rounds` times with the order alternating, and each side's
    figure is its median run (harness.bench.intake.in_turn). Before each run, both sides'
    consumers are let catch up with what their last runs queued, so that neither side's
    backlog eats the other's run.
    """
    order = order_mix(LoadSpec(orders=1, seed=11, progress=False))[0]
    script = write_script(folder, order)
    # Their logs are kept in the run folder: a non-2xx answer is reported by the bench and
    # must be explainable afterwards.
    with Lab(broker, _config(), workdir=folder / "intake-vs-naive-lab") as lab, \
            Lab(broker, _config(), impl=other, workdir=folder / "intake-vs-naive-other") as them:
        labs = {"lab": lab, "other": them}

        def settle_both(_side: str) -> None:
            # Both: the side that just ran is still draining its run's orders.
            for one in labs.values():
                _settle(one, 60 + 2 * seconds)

        measured = in_turn({side: one.url("order") + "/order" for side, one in labs.items()},
                           script, seconds=seconds, rounds=rounds, shapes=shapes,
                           before_run=settle_both)
        names = {side: one.impl.name for side, one in labs.items()}
    return {side: {"impl": names[side], "script": script.name, **measured[side]}
            for side in labs}


def latency_at(broker: Broker, impl: Impl | str | Path | None, *, orders: int = 500,
               rate: float = 50.0) -> dict[str, Any]:
    """End-to-end latency (placed -> notified) at a paced `rate`: p50, p95, p99, max in ms."""
    with Lab(broker, _config(), impl=impl) as lab:
        # Enough workers that a slow answer does not hold back the pacing (open loop).
        load = place_orders(lab.url("order"), LoadSpec(orders=orders, rate=rate,
                                                       concurrency=16, seed=7,
                                                       progress=False))
        ids = load.loc[load["accepted"], "order_id"].tolist()
        notes = lab.wait_notified(ids, 120 + orders / 10)
        name = lab.impl.name
    lat = latency_frame([n for n in notes if n["order_id"] in set(ids)], load)
    statuses = load["status"].value_counts(dropna=False)
    return {"impl": name, "rate_orders_s": rate, "orders": orders,
            "accepted": len(ids), "measured": int(lat["end_to_end_ms"].notna().sum()),
            "statuses": {str(k): int(v) for k, v in statuses.items()},
            "end_to_end_ms": percentiles(lat["end_to_end_ms"]),
            # Where the end-to-end time goes: the inventory's hop, then the notification's.
            "placed_to_decided_ms": percentiles(lat["inventory_ms"]),
            "decided_to_notified_ms": percentiles(lat["notify_ms"]),
            "http_ms": percentiles(load["http_ms"])}
