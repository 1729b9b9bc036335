"""matplotlib figures of a run: the same figure in a notebook, a PNG in the run folder."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter

from lab_services.crashpoints import POINTS

# Figures are built without pyplot: no global state, no stray windows, safe off the main
# thread; a notebook shows a returned Figure, the report saves it as PNG.

def count_axis(ax: Axes, bars: bool = True) -> None:
    """Whole numbers on a count axis, and every bar labelled with its count (zero too)."""
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(bottom=0, top=max(1.0, ax.get_ylim()[1] * 1.1))
    if bars:
        for container in ax.containers:
            ax.bar_label(container, fmt="%d", fontsize=8)


FAULT_COLOURS = {"stop": "tab:orange", "kill": "tab:red", "restart": "tab:green",
                 "start": "tab:green", "crash": "tab:red", "inject": "tab:purple"}


PLAIN = {"stop": "{} stopped", "kill": "{} killed", "start": "{} started",
         "restart": "{} restarted", "crash": "{} crashed", "hold": "backlog waits in {}",
         "ready": "{} ready again", "healthy": "{} reconnected",
         "inject duplicate": "duplicate sent", "inject malformed": "malformed message sent",
         "inject poison": "poison order placed"}


def plain_label(kind: str, target: str) -> str:
    """A timeline event in plain words ("inventory stopped", not "stop inventory")."""
    if kind not in PLAIN:
        return f"{kind} {target}".strip()
    return PLAIN[kind].format(target) if "{}" in PLAIN[kind] else PLAIN[kind]


def _outages(timeline: pd.DataFrame) -> list[tuple[float, float | None]]:
    """(broker stopped or killed, broker ready again) pairs; None if it never came back."""
    spans: list[tuple[float, float | None]] = []
    down = None
    for _, row in timeline.sort_values("t").iterrows():
        if row["target"] == "broker" and row["kind"] in ("stop", "kill") and down is None:
            down = row["t"]
        elif row["target"] == "broker" and row["kind"] == "ready" and down is not None:
            spans.append((down, row["t"]))
            down = None
    return spans + ([(down, None)] if down is not None else [])


def _fault_groups(timeline: pd.DataFrame, window: float) -> list[tuple[float, str, str]]:
    """Faults of one kind close together in time, as (t, colour, label): one mark each."""
    groups: list[list] = []
    for _, row in timeline.sort_values("t").iterrows():
        last = groups[-1] if groups else None
        if last and last[1] == row["kind"] and row["t"] - last[0] <= window:
            last[3] += 1
            if row["target"] != last[2]:
                last[2] = ""
            continue
        groups.append([row["t"], row["kind"], row["target"], 1])
    marks = []
    for t, kind, target, n in groups:
        colour = next((c for k, c in FAULT_COLOURS.items() if kind.startswith(k)), "tab:gray")
        label = plain_label(kind, target or "services") + (f" ×{n}" if n > 1 else "")
        marks.append((t, colour, label))
    return marks


def mark_faults(ax: Axes, timeline: pd.DataFrame | None) -> None:
    """Draw the faults of the timeline as labelled vertical lines (bursts as one mark)."""
    if timeline is None or timeline.empty:
        return
    left, right = ax.get_xlim()
    # Every fault on the chart, even one after the last data point (e.g. "broker ready").
    left = min(left, float(timeline["t"].min()))
    right = max(right, float(timeline["t"].max()) + 0.03 * (right - left))
    for i, (down, up) in enumerate(_outages(timeline)):  # from the kill until it is ready
        ax.axvspan(down, right if up is None else up, color="tab:red", alpha=0.1,
                   label=None if i else "broker down")
    ax.set_xlim(left, right)
    marks = _fault_groups(timeline, window=0.02 * (right - left))
    for i, (t, colour, label) in enumerate(marks):
        ax.axvline(t, color=colour, linestyle="--", linewidth=1, alpha=0.8)
        # Alternate the label heights so that neighbours do not print over each other.
        ax.text(t, 0.98 - 0.3 * (i % 2), f" {label}", rotation=90, fontsize=7, va="top",
                ha="left", color=colour, transform=ax.get_xaxis_transform())


def depth_chart(samples: pd.DataFrame, timeline: pd.DataFrame | None = None, *,
                queues: tuple[str, ...] | None = None, title: str = "Queue depth over time",
                model: pd.DataFrame | None = None) -> Figure:
    """Messages waiting in each queue over time, with the faults marked."""
    fig = Figure(figsize=(9, 4))
    ax = fig.subplots()
    data = samples if queues is None else samples[samples["queue"].isin(queues)]
    busy = {q for q, g in data.groupby("queue") if g["ready"].fillna(0).max() > 0}
    for queue, g in data.groupby("queue"):
        g = g.sort_values("t")
        if queues is None and busy and queue not in busy:
            continue  # an always-empty queue only clutters the legend
        ax.plot(g["t"], g["ready"].astype(float), label=queue, linewidth=1.6)
    if model is not None and not model.empty:
        ax.plot(model["t"], model["depth"], color="black", linestyle=":", linewidth=1.5,
                label="model prediction")
    ax.set_xlabel("time since run start (s)")
    ax.set_ylabel("messages ready in queue")
    ax.set_title(title)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize=8)
    mark_faults(ax, timeline)
    fig.tight_layout()
    return fig


def latency_cdf(latency: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Cumulative distribution of latency per hop and end to end."""
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    hops = {"inventory_ms": "placed -> inventory decided", "notify_ms": "decided -> notified",
            "end_to_end_ms": "placed -> notified (end to end)"}
    styles = {"inventory_ms": "-", "notify_ms": "--", "end_to_end_ms": ":"}
    for col, label in hops.items():
        values = np.sort(latency[col].dropna().to_numpy())
        if len(values):  # distinct line styles: a hop close to the total stays visible
            ax.plot(values, np.arange(1, len(values) + 1) / len(values), styles[col],
                    linewidth=2.2 if col == "end_to_end_ms" else 1.5,
                    label=f"{label}: median {np.median(values):.1f} ms")
    if "end_to_end_ms" in latency and latency["end_to_end_ms"].notna().any():
        p99 = latency["end_to_end_ms"].quantile(0.99)
        ax.axvline(p99, color="gray", linestyle=":", label=f"end-to-end p99 = {p99:.1f} ms")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels collide on a log axis
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("fraction of orders")
    if title is None and latency.get("end_to_end_ms", pd.Series(dtype=float)).notna().any():
        title = (f"{len(latency)} orders: median {latency['end_to_end_ms'].median():.1f} ms "
                 "end to end")
    ax.set_title(title or "Latency per hop")
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="lower right")
    else:  # notifications without timestamps (another implementation): say so on the chart
        ax.text(0.5, 0.5, "no per-hop timestamps in the notifications", ha="center",
                va="center", transform=ax.transAxes)
    fig.tight_layout()
    return fig


def double_reservations_chart(table: pd.DataFrame) -> Figure:
    """Double reservations per idempotency mode and case (bars; zero is the goal)."""
    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    pivot = table.pivot(index="mode", columns="case", values="double_reservations")
    known = ("off", "memory", "sqlite")
    pivot = pivot.reindex([m for m in known if m in pivot.index]
                          + [m for m in pivot.index if m not in known])
    pivot.plot.bar(ax=ax, rot=0)
    count_axis(ax)
    ax.set_xlabel("idempotency mode of the inventory service")
    ax.set_ylabel("orders whose stock was reserved twice")
    clean = [m for m in pivot.index if (pivot.loc[m].fillna(0) == 0).all()]
    ax.set_title(f"Duplicates: {', '.join(clean) or 'no mode'} reserved every order once")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def drain_chart(samples: pd.DataFrame, queue: str, start: float, end: float | None,
                rate: float | None, timeline: pd.DataFrame | None = None, *,
                first_s: float | None = None, decisions: int = 0) -> Figure:
    """The backlog draining after the consumer returns: the time to empty, split into the
    wait for the first decisions and the rest at the first-to-last decision `rate`."""
    fig = Figure(figsize=(10, 4))
    ax = fig.subplots()
    g = samples[samples["queue"] == queue].sort_values("t")
    ax.plot(g["t"], g["ready"].astype(float), label=f"{queue}: messages ready")
    if end is not None:
        ax.axvspan(start, end, color="tab:green", alpha=0.1,
                   label=f"restart to empty: {end - start:.2f} s")
    if end is not None and rate and first_s is not None and decisions > 1:
        # A sum that adds up (first + rest = span), where a rate times the span would
        # not: the rate is counted from the first decision, the span from the restart.
        ax.plot([], [], " ", label=f"= first decisions after {first_s:.2f} s")
        ax.plot([], [], " ", label=f"+ {decisions - 1} more at {rate:.1f}/s "
                                   f"({(decisions - 1) / rate:.2f} s)")
    ax.set_xlabel("time since run start (s)")
    ax.set_ylabel("messages waiting")
    ax.set_title("Backlog drain: depth falls at the consumer's spare capacity")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    # Outside the axes, so that it never hides the curve.
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    mark_faults(ax, timeline)
    fig.tight_layout()
    return fig


def outcome_table_chart(table: pd.DataFrame, value: str, title: str, ylabel: str) -> Figure:
    """A bar chart of one count per case (e.g. lost notifications per crash point)."""
    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    pivot = table.pivot(index="point", columns="mode", values=value)
    pivot = pivot.reindex([p for p in POINTS if p in pivot.index])
    pivot = pivot[[m for m in ("off", "memory", "skip", "sqlite") if m in pivot.columns]]
    pivot.plot.bar(ax=ax, rot=0)
    count_axis(ax)
    ax.set_xlabel("where the inventory crashed")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def throughput_chart(load: pd.DataFrame, latency: pd.DataFrame,
                     timeline: pd.DataFrame | None = None, *, bin_s: float = 0.5,
                     title: str = "Orders accepted and notified per second") -> Figure:
    """Orders accepted (HTTP 201) and notified per second over the run, faults marked."""
    fig = Figure(figsize=(9, 4))
    ax = fig.subplots()
    ok = load.loc[load["accepted"], "t_answered"].dropna()
    done = latency["t_notified"].dropna() if "t_notified" in latency else pd.Series(dtype=float)
    end = max([ok.max() if len(ok) else 0, done.max() if len(done) else 0]) + bin_s
    bins = np.arange(0, end + bin_s, bin_s)
    for series, label, style in ((ok, "accepted (HTTP 201/202)", "-"), (done, "notified", "--")):
        counts, edges = np.histogram(series, bins=bins)  # dashed: visible where they coincide
        ax.step(edges[:-1], counts / bin_s, style, where="post", label=label,
                linewidth=2.2 if style == "-" else 1.4)
    ax.set_xlabel("time since run start (s)")
    ax.set_ylabel("orders per second")
    ax.set_title(title)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    mark_faults(ax, timeline)
    fig.tight_layout()
    return fig


def http_chart(load: pd.DataFrame, timeline: pd.DataFrame | None = None) -> Figure:
    """When each order was accepted, and how long it took: retries after 503 stand out."""
    fig = Figure(figsize=(9, 4))
    ax = fig.subplots()
    ok = load[load["accepted"]]
    created, later = ok[ok["status"] == 201], ok[ok["status"] == 202]
    ax.scatter(created["t_sent"], created["http_ms"], s=6, label="created (201)")
    ax.scatter(later["t_sent"], later["http_ms"], s=10, marker="s", color="tab:purple",
               label="accepted, published later (202)")
    retried = ok[ok["attempts"] > 1]
    ax.scatter(retried["t_sent"], retried["http_ms"], s=14, marker="x", color="tab:orange",
               label="accepted only after 503 retries")
    ax.set_yscale("log")
    ax.set_xlabel("time the order was first sent (s)")
    ax.set_ylabel("time until accepted (ms, log)")
    ax.set_title(f"{len(ok)} of {len(load)} accepted: {len(later)} with 202, {len(retried)} "
                 f"after 503 retries; longest {ok['http_ms'].max() / 1000:.1f} s"
                 if len(ok) else "no order accepted")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    mark_faults(ax, timeline)
    fig.tight_layout()
    return fig
