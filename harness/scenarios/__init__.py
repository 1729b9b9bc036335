"""The lab's scenarios: each runs on a real broker, is observed, charted and judged.

One module per scenario; each registers itself, with its metadata, in `registry`. Every
scenario is a function `name(broker=None, *, out="runs", progress=True, impl=None, ...)`
that returns a `ScenarioResult` and leaves a run folder; notebooks, the CLI and `grade` call
the same functions. Without a broker, one is opened with `open_broker("auto")`.

Black-box scenarios (baseline, stock-exhaustion, backlog-drain, reconnect, duplicates,
broker-nacks, restart-idempotency, malformed, kill-9, chaos) take any implementation (`impl=`
a spec path or harness.lab.impl.Impl); white-box ones (idempotency, crash-window, dlq,
scale-out) use the lab's own knobs and refuse others.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from harness.reporting.results import ScenarioResult, combined_report, run_folder
from harness.scenarios import registry
from harness.scenarios.backlog_drain import backlog_drain, drain_stats
from harness.scenarios.baseline import baseline
from harness.scenarios.common import PLENTY, POISON_USER
from harness.scenarios.crash_window import crash_window
from harness.scenarios.dlq import dlq
from harness.scenarios.duplicates import duplicates, restart_idempotency
from harness.scenarios.idempotency import idempotency
from harness.scenarios.kill9 import kill9
from harness.scenarios.malformed import malformed
from harness.scenarios.reconnect import reconnect
from harness.scenarios.registry import Scenario, WhiteBoxOnly, register
from harness.scenarios.scale_out import scale_out

log = logging.getLogger(__name__)

__all__ = ["PLENTY", "POISON_USER", "Scenario", "ScenarioResult", "WhiteBoxOnly",
           "backlog_drain", "baseline", "crash_window", "dlq", "drain_stats", "duplicates",
           "idempotency", "kill9", "malformed", "reconnect", "register", "registry",
           "restart_idempotency", "run_all", "scale_out"]


def run_all(broker: Any = None, *, orders: int | None = None, out: str | Path = "runs",
            progress: bool = True, size: str = "quick",
            own_node_for_restarts: bool | None = None) -> tuple[list[ScenarioResult], Path]:
    """Every registered scenario on one broker, then one combined report.

    `size="quick"` (the default) runs each scenario at its quick size, so that a newcomer's
    first run is short; `size="full"` at its class size. `orders` overrides both.

    `own_node_for_restarts` (default: at the quick size, on a local node) runs the
    scenarios that restart the broker on a second local node of their own, alongside the
    others: a restart there cannot disturb the others' runs, and most of a first run is
    spent waiting for nodes to boot, which two lanes do at once. Each scenario still runs
    alone on its broker's restarts; the report lists them in the usual order.
    """
    from harness.scenarios.common import broker_for
    parent = run_folder(out, "all")
    began = time.monotonic()
    took: dict[str, float] = {}
    skipped: list[str] = []
    done: dict[str, ScenarioResult] = {}
    with broker_for(broker) as b:
        runnable = []
        for sc in registry.scenarios().values():
            if sc.needs_restartable_broker and not b.can_stop:
                log.warning("skipping %s: it restarts the broker, and a %s broker cannot be "
                            "restarted by the harness", sc.name, b.provider)
                skipped.append(f"{sc.name} (needs a broker the harness can restart)")
            elif sc.needs_cluster and len(b.nodes) < 3:
                log.warning("skipping %s: it needs a 3-node cluster (--broker local-cluster)",
                            sc.name)
            else:
                runnable.append(sc)
        if own_node_for_restarts is None:
            own_node_for_restarts = size == "quick" and b.provider == "local"
        restarting = [sc for sc in runnable
                      if own_node_for_restarts and sc.needs_restartable_broker]
        bar = tqdm(total=len(runnable), desc="scenarios", disable=not progress)

        def run(sc: Scenario, on: Any) -> None:
            kwargs: dict[str, Any] = {"out": parent, "progress": False,
                                      **registry.sized_kwargs(sc, size)}
            if orders is not None and sc.accepts_orders:
                kwargs["orders"] = orders
            started = time.monotonic()
            done[sc.name] = sc.function(on, **kwargs)
            took[sc.name] = time.monotonic() - started
            bar.set_postfix_str(sc.name)
            bar.update(1)

        with ThreadPoolExecutor(max_workers=1) as lane:
            restarts = lane.submit(_on_own_node, b, restarting, run) if restarting else None
            for sc in runnable:
                if sc not in restarting:
                    run(sc, b)
            if restarts is not None:
                restarts.result()
        bar.close()
    results = [done[sc.name] for sc in runnable]
    return results, combined_report(results, parent, took_s=took, skipped=skipped,
                                    wall_s=time.monotonic() - began,
                                    own_node=[sc.name for sc in restarting])


def _on_own_node(like: Any, scenarios: list[Scenario],
                 run: Callable[[Scenario, Any], None]) -> None:
    """Run scenarios in order on a local node of their own, with the settings of `like`."""
    from harness.brokers import open_broker
    settings = {f.name: getattr(like.settings, f.name) for f in fields(like.settings)}
    settings.update(node_name=None, amqp_port=None, management_port=None)  # its own
    with open_broker("local", **settings) as own:
        for sc in scenarios:
            run(sc, own)
