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
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from harness.reporting.results import ScenarioResult, combined_report, run_folder
from harness.scenarios import lanes, registry
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
    """Every registered scenario, then one combined report.

    `size="quick"` (the default) runs each scenario at its quick size, so that a newcomer's
    first run is short; `size="full"` at its class size. `orders` overrides both.

    `own_node_for_restarts` (default: at the quick size, on a local node) runs each scenario
    that restarts the broker on a local node of its own, alongside the others (`lanes`).
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
        wanted = own_node_for_restarts
        if wanted is None and size != "quick":
            wanted = False  # the class sizes: one scenario at a time, as in a class's grading
        own_node = lanes.aside(runnable, b, wanted)
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

        lanes.run_lanes(b, runnable, own_node, run)
        bar.close()
    results = [done[sc.name] for sc in runnable]
    return results, combined_report(results, parent, took_s=took, skipped=skipped,
                                    wall_s=time.monotonic() - began,
                                    own_node=[sc.name for sc in own_node])
