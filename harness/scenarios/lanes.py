"""Scenarios that restart the broker, each on a local node of its own, alongside the rest.

A broker restart takes a node 7-15 s to come back on a 2-core machine, and `reconnect` and
`chaos` restart it three times between them: most of a first `run all` or a report card was
waiting for nodes to boot. Run on a node of its own, such a scenario disturbs no other run,
and the boots overlap with the other scenarios' work. Each scenario still has its broker to
itself while it restarts it, and callers report in their usual order.

The other scenarios may also run two at a time on the shared broker (`side_by_side`), each
in a vhost of its own with its own service processes: a grade does so for an implementation
that honours vhosts and has no fixed address (`grade.py`), since none of them touches
anything outside its vhost (a policy, its own processes, its own queues).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any

from harness.scenarios.registry import Scenario

log = logging.getLogger(__name__)


def can_lend_nodes(broker: Any) -> bool:
    """True if more nodes like this broker can be had cheaply: a single local node."""
    return getattr(broker, "provider", None) == "local" and getattr(broker, "can_stop", False)


# Scenarios run at once on the shared broker when side by side: two keep a 2-core machine
# busy while the restart lanes wait for their nodes.
SIDE_BY_SIDE = 2


def use_lanes(broker: Any, asked: bool | None) -> bool:
    """Whether to use lanes: as `asked`, or (None) when the broker is a single local node."""
    return can_lend_nodes(broker) if asked is None else asked


def aside(scenarios: Sequence[Scenario], broker: Any, wanted: bool | None) -> list[Scenario]:
    """The scenarios to run on nodes of their own: those that restart the broker, when
    `wanted` (None: when the broker is a local node) and something else runs meanwhile."""
    restarting = [sc for sc in scenarios if sc.needs_restartable_broker]
    if not use_lanes(broker, wanted) or not restarting or len(restarting) == len(scenarios):
        return []
    return restarting


def run_lanes(broker: Any, scenarios: Sequence[Scenario], own_node: Sequence[Scenario],
              run: Callable[[Scenario, Any], None], *, side_by_side: int = 1,
              spares: Spares | None = None) -> None:
    """Call `run(sc, node)` for every scenario: those in `own_node` each on a fresh local
    node (settings like `broker`'s, or one of `spares`, booted ahead) at the same time, the
    others on `broker` in order, `side_by_side` at a time. One whose node could not be
    started runs on `broker` at the end, alone."""
    with ThreadPoolExecutor(max_workers=max(1, len(own_node))) as pool:
        futures = {sc.name: pool.submit(_on_own_node, broker, sc, run, spares)
                   for sc in own_node}
        in_turn([sc for sc in scenarios if sc not in own_node], broker, run, side_by_side)
        # result() waits for each lane and re-raises its exception, if it raised.
        ran = {name: f.result() for name, f in futures.items()}
    for sc in own_node:
        if not ran[sc.name]:
            run(sc, broker)  # after the others: it restarts the broker they share


def node_settings(like: dict[str, Any]) -> dict[str, Any]:
    """A node of its own: its own name and ports; the rest (credentials, timeouts) as
    `like`'s."""
    return {**like, "node_name": None, "amqp_port": None, "management_port": None}


class Spares:
    """Local nodes booted ahead, alongside the shared broker's own boot, for the scenarios
    that will run on nodes of their own: a boot takes 5-15 s on 2 cores, and booted
    while the other scenarios run it starts those scenarios that much later."""

    def __init__(self, count: int, settings: dict[str, Any]) -> None:
        from harness.brokers import open_broker
        self._pool = ThreadPoolExecutor(max_workers=max(1, count))
        self._booting = [self._pool.submit(open_broker, "local", **node_settings(settings))
                         for _ in range(count)]
        self._lock = threading.Lock()

    def take(self) -> Any:
        """A booted node (the caller closes it); raises as its boot did; None when none
        is left."""
        with self._lock:
            if not self._booting:
                return None
            booting = self._booting.pop(0)
        return booting.result()

    def close(self) -> None:
        """Close the nodes nobody took (after their boot ends)."""
        with self._lock:
            left, self._booting = self._booting, []
        for booting in left:
            try:
                booting.result().close()
            except Exception as exc:  # its boot failed: nothing to close
                log.debug("a spare node did not boot: %s", exc)
        self._pool.shutdown(wait=True)


def in_turn(scenarios: Sequence[Scenario], broker: Any, run: Callable[[Scenario, Any], None],
            side_by_side: int = 1) -> None:
    """Run the scenarios on `broker`, `side_by_side` at a time: each worker takes the next
    one not yet started when it is free. Alone, in their order; side by side, the last
    first: the fault scenarios come late in the card, and they are the ones that wait
    longest for what a broken implementation never sends, so their waits overlap."""
    if side_by_side <= 1 or len(scenarios) <= 1:
        for sc in scenarios:
            run(sc, broker)
        return
    queue = list(reversed(scenarios))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if not queue:
                    return
                sc = queue.pop(0)
            run(sc, broker)

    with ThreadPoolExecutor(max_workers=min(side_by_side, len(scenarios))) as pool:
        for f in [pool.submit(worker) for _ in range(min(side_by_side, len(scenarios)))]:
            f.result()  # re-raises a worker's exception


def _on_own_node(like: Any, sc: Scenario, run: Callable[[Scenario, Any], None],
                 spares: Spares | None = None) -> bool:
    """Run one scenario on a local node of its own (a spare, or one started now with the
    settings of `like`); False (and nothing run) if no such node could be had."""
    from harness.brokers import BrokerError, BrokerNotFound, open_broker
    try:
        own = spares.take() if spares is not None else None
        if own is None:
            own = open_broker("local", **node_settings(asdict(like.settings)))
    except (BrokerError, BrokerNotFound) as exc:
        log.warning("%s: no local node of its own (%s); it runs on the shared broker after "
                    "the others", sc.name, str(exc).splitlines()[0])
        return False
    log.info("%s: on a local node of its own", sc.name)
    with own:
        run(sc, own)
    return True
