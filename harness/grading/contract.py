"""docs/contract.md's generated parts: the endpoints (from the lab's OpenAPI documents), the
topology (from lab_services.topology) and the black-box scenarios (from the registry), so
that the page cannot drift from the code.

    python -m harness contract           # exit 1 if docs/contract.md is stale
    python -m harness contract --write   # regenerate its generated sections
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from lab_services import contract as facts
from lab_services import topology as topo

CONTRACT = Path(__file__).resolve().parents[2] / "docs" / "contract.md"
_SECTION = re.compile(r"(<!-- generated: (\w+) -->\n)(.*?)(<!-- end generated: \2 -->)", re.S)


def topology_markdown() -> str:
    """Exchanges, queues (with arguments) and bindings, as Markdown tables."""
    t = topo.build_topology("classic")
    lines = ["| exchange | type | durable |", "|---|---|---|"]
    lines += [f"| `{e.name}` | {e.type} | {'yes' if e.durable else 'no'} |" for e in t.exchanges]
    lines += ["", "| queue | arguments (exactly these: a mismatch closes your channel) |",
              "|---|---|"]
    lines += [f"| `{q.name}` | `{json.dumps(q.arguments, sort_keys=True)}` |" for q in t.queues]
    lines += ["", "| exchange | routing key | queue |", "|---|---|---|"]
    lines += [f"| `{b.exchange}` | `{b.routing_key}` | `{b.queue}` |" for b in t.bindings]
    lines += ["", f"Queue type `{t.queue_type}` shown; with `LAB_QUEUE_TYPE=quorum` the lab "
              "declares the same queues with `x-queue-type: quorum` (and the work queues with "
              f"`x-delivery-limit: {topo.QUORUM_DELIVERY_LIMIT}`). The retry queues "
              f"(`{topo.retry_queue(1)}` ...) hold a message "
              f"{', '.join(map(str, topo.RETRY_DELAYS_MS))} ms before it goes back to its work "
              "queue; they are how the lab's services retry, and other implementations need "
              "not use them (but must not declare them differently)."]
    return "\n".join(lines) + "\n"


def services_markdown() -> str:
    """The services: default port, queues consumed, events published, HTTP endpoints."""
    from lab_services import openapi
    lines = ["| service | default port | consumes | publishes | HTTP |", "|---|---|---|---|---|"]
    for service in facts.SERVICES:
        consumed = [f"`{q}`" + (" (optional: to update an order's status)"
                                if q in topo.OPTIONAL_QUEUES else "")
                    for q in topo.queues_of(service)]
        http = [f"`{m.upper()} {p}`" for p, ops in openapi.document(service)["paths"].items()
                for m in ops]
        lines.append(f"| {service} | {facts.DEFAULT_PORTS[service]} | "
                     f"{', '.join(consumed) or '-'} | "
                     f"{', '.join(f'`{e}`' for e in facts.PUBLISHES[service]) or '-'} | "
                     f"{', '.join(http)} |")
    return "\n".join(lines) + "\n"


def endpoints_markdown() -> str:
    """Every service's endpoints and status codes, from the lab's OpenAPI documents."""
    from lab_services import openapi
    lines = ["| service | endpoint | what | status codes |", "|---|---|---|---|"]
    for service in facts.SERVICES:
        for path, ops in openapi.document(service)["paths"].items():
            for method, op in ops.items():
                codes = ", ".join(sorted(op.get("responses", {})))
                lines.append(f"| {service} | `{method.upper()} {path}` | "
                             f"{op.get('summary', '')} | {codes} |")
    return "\n".join(lines) + "\n"


def scenarios_markdown() -> str:
    """The black-box scenarios that `harness grade` runs, one row each."""
    from harness.scenarios import registry
    lines = ["| scenario | what it does | needs a restartable broker |", "|---|---|---|"]
    for s in registry.black_box():
        lines.append(f"| `{s.name}` | {s.summary} | "
                     f"{'yes' if s.needs_restartable_broker else 'no'} |")
    return "\n".join(lines) + "\n"


def timing_markdown() -> str:
    """The contract's throughput floor and the grader's time bounds, from the code."""
    from harness.lab import LabConfig
    from harness.lab.service import PORT_GRACE_S
    from harness.runner import QUIET_S, STALL_S, THROUGHPUT_FLOOR
    return (f"- **Throughput floor**: each service handles at least {THROUGHPUT_FLOOR:g} "
            f"orders per second ({1000 / THROUGHPUT_FLOOR:.0f} ms per order) under the "
            "scenarios' load. The harness waits for notifications for as long as this floor "
            f"allows, and past a scenario's own bound for as long as notifications keep "
            f"arriving (at most {STALL_S:g} s apart): a slower implementation is waited for "
            "while it makes progress; one that stops is not. Once nothing has been notified "
            f"for {STALL_S:g} s while the broker held nothing on its way to a notification "
            "(ready or unacked, in any queue but the DLQ and the optional ones) for the last "
            f"{QUIET_S:g} s of them, the wait ends before the scenario's own bound: an "
            "accepted order kept outside the broker (an outbox) is published within "
            f"{STALL_S:g} s of the broker taking connections.\n"
            f"- **Start-up**: a service opens its HTTP port within {PORT_GRACE_S:g} s and "
            f"answers `200` on its health path within {LabConfig().health_timeout:g} s; "
            "otherwise the grade stops at once with its log tail and whether the port was "
            "ever open.\n")


GENERATORS = {"services": services_markdown, "topology": topology_markdown,
              "scenarios": scenarios_markdown, "endpoints": endpoints_markdown,
              "timing": timing_markdown}


def render(text: str) -> str:
    """The page with every generated section rendered afresh."""
    def fill(m: re.Match[str]) -> str:
        make = GENERATORS.get(m.group(2))
        if make is None:
            raise ValueError(f"unknown generated section {m.group(2)!r}")
        return m.group(1) + make() + m.group(4)
    return _SECTION.sub(fill, text)


def stale(path: Path = CONTRACT) -> bool:
    """True if the page's generated sections differ from what the code says now."""
    text = path.read_text(encoding="utf-8")
    return render(text) != text


def write(path: Path = CONTRACT) -> None:
    """Regenerate the page's generated sections in place."""
    path.write_text(render(path.read_text(encoding="utf-8")), encoding="utf-8")
