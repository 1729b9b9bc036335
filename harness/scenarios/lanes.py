"""Scenarios that restart the broker, each on a local node of its own, alongside the rest.

A broker restart takes a node 7-15 s to come back on a 2-core machine, and `reconnect` and
`chaos` restart it three times between them: most of a first `run all` or a report card was
waiting for nodes to boot. Run on a node of its own, such a scenario disturbs no other run,
and the boots overlap with the other scenarios' work. Each scenario still has its broker to
itself while it restarts it, and callers report in their usual order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any

from harness.scenarios.registry import Scenario

log = logging.getLogger(__name__)


def can_lend_nodes(broker: Any) -> bool:
    """True if more nodes like this broker can be had cheaply: a single local node."""
    return getattr(broker, "provider", None) == "local" and getattr(broker, "can_stop", False)


def aside(scenarios: Sequence[Scenario], broker: Any, wanted: bool | None) -> list[Scenario]:
    """The scenarios to run on nodes of their own: those that restart the broker, when
    `wanted` (None: when the broker is a local node) and something else runs meanwhile."""
    if wanted is None:
        wanted = can_lend_nodes(broker)
    restarting = [sc for sc in scenarios if sc.needs_restartable_broker]
    if not wanted or not restarting or len(restarting) == len(scenarios):
        return []
    return restarting


def run_lanes(broker: Any, scenarios: Sequence[Scenario], own_node: Sequence[Scenario],
              run: Callable[[Scenario, Any], None]) -> None:
    """Call `run(sc, node)` for every scenario: those in `own_node` each on a fresh local
    node (settings like `broker`'s) at the same time, the others in order on `broker`.
    One whose node could not be started runs on `broker` at the end, alone."""
    with ThreadPoolExecutor(max_workers=max(1, len(own_node))) as pool:
        futures = {sc.name: pool.submit(_on_own_node, broker, sc, run) for sc in own_node}
        for sc in scenarios:
            if sc not in own_node:
                run(sc, broker)
        # result() waits for each lane and re-raises its exception, if it raised.
        ran = {name: f.result() for name, f in futures.items()}
    for sc in own_node:
        if not ran[sc.name]:
            run(sc, broker)  # after the others: it restarts the broker they share


def _on_own_node(like: Any, sc: Scenario, run: Callable[[Scenario, Any], None]) -> bool:
    """Run one scenario on a local node of its own, with the settings of `like`; False
    (and nothing run) if no such node could be started."""
    from harness.brokers import BrokerError, BrokerNotFound, open_broker
    # Its own name and ports; the rest (credentials, timeouts) as `like`'s.
    settings = {**asdict(like.settings), "node_name": None, "amqp_port": None,
                "management_port": None}
    try:
        own = open_broker("local", **settings)
    except (BrokerError, BrokerNotFound) as exc:
        log.warning("%s: no local node of its own (%s); it runs on the shared broker after "
                    "the others", sc.name, str(exc).splitlines()[0])
        return False
    log.info("%s: on a local node of its own", sc.name)
    with own:
        run(sc, own)
    return True
