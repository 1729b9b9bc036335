"""The chaos run's charts: fault periods shaded (there are too many faults to label each),
queue depth, latency over time, and the checker's outcome table."""

from __future__ import annotations

from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from harness.chaos.check import JUDGED
from harness.chaos.schedule import MEMORY_ALARM, MEMORY_CLEAR
from harness.invariants import Verdict
from harness.reporting import plots

TARGET_COLOURS = {"broker": "tab:red", "order": "tab:blue", "inventory": "tab:orange",
                  "notification": "tab:green"}


def fault_periods(timeline: pd.DataFrame) -> list[tuple[float, float, str, str]]:
    """The timeline as periods (start, end, label, colour): each target's time down between
    its kill and its start, the memory alarm, the storms; a flood is a short period."""
    periods = []
    down: dict[str, float] = {}
    alarm_at = None
    end_of_run = float(timeline["t"].max()) if not timeline.empty else 0.0
    for row in timeline.sort_values("t").itertuples():
        if row.kind == "kill":
            down[row.target] = row.t
        elif (row.kind == "ready" or (row.kind == "start" and row.target != "broker")) \
                and row.target in down:
            periods.append((down.pop(row.target), row.t, f"{row.target} down",
                            TARGET_COLOURS.get(row.target, "tab:gray")))
        elif row.kind == MEMORY_ALARM:
            alarm_at = row.t
        elif row.kind == MEMORY_CLEAR and alarm_at is not None:
            periods.append((alarm_at, row.t, "memory alarm", "tab:brown"))
            alarm_at = None
        elif row.kind == "inject duplicate storm":
            seconds = float(str(row.detail).split("s", 1)[0])
            periods.append((row.t, row.t + seconds, "duplicate storm", "tab:purple"))
        elif row.kind == "inject malformed flood":
            periods.append((row.t, row.t + 0.15, "malformed flood", "black"))
    periods += [(t, end_of_run, f"{target} down", TARGET_COLOURS.get(target, "tab:gray"))
                for target, t in down.items()]
    return periods


def mark_chaos(ax: Any, timeline: pd.DataFrame) -> None:
    """Shade every fault period on a chart (one legend entry per kind of period).

    With dozens of faults in a few seconds, labelled lines (plots.mark_faults) would print
    over each other: periods in the colours of their target stay readable.
    """
    seen: set[str] = set()
    for start, end, label, colour in fault_periods(timeline):
        ax.axvspan(start, max(end, start + 0.05), color=colour,
                   alpha=0.35 if label == "malformed flood" else 0.12,
                   label=None if label in seen else label, linewidth=0)
        seen.add(label)
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, fontsize=7, loc="upper right", ncol=2)


def depth_per_queue(samples: pd.DataFrame, timeline: pd.DataFrame, seed: int) -> Figure:
    """Messages ready in each lab queue over the run, fault periods shaded."""
    fig = plots.depth_chart(samples, None, title=f"Queue depth per queue, chaos seed {seed}")
    mark_chaos(fig.axes[0], timeline)
    return fig


def latency_over_time(latency: pd.DataFrame, timeline: pd.DataFrame) -> Figure:
    """End-to-end latency of each order against when it was notified, faults marked."""
    fig = Figure(figsize=(9, 4))
    ax = fig.subplots()
    lat = latency.dropna(subset=["t_notified", "end_to_end_ms"]) if not latency.empty \
        else latency
    if not lat.empty:
        for status, g in lat.groupby("status"):
            ax.scatter(g["t_notified"], g["end_to_end_ms"], s=5, label=str(status))
        ax.set_yscale("log")
    ax.set_xlabel("time the order was notified (s since run start)")
    ax.set_ylabel("placed -> notified (ms, log)")
    ax.set_title("Latency through the faults: orders wait, none is dropped")
    ax.grid(alpha=0.3)
    mark_chaos(ax, timeline)
    fig.tight_layout()
    return fig


def outcome_table(verdict: Verdict, timeline: pd.DataFrame) -> Figure:
    """The checker's counts as a table (red where non-zero), with the faults listed."""
    fig = Figure(figsize=(9, 4.5))
    ax_t, ax_f = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    rows = [[name, str(verdict.counts.get(name))] for name in JUDGED]
    table = ax_t.table(cellText=rows, colLabels=["invariant", "count"], loc="center",
                       cellLoc="left")
    for i, name in enumerate(JUDGED, start=1):
        bad = bool(verdict.evidence.get(name))
        table[i, 1].set_facecolor("#f4b6b6" if bad else "#c8e6c9")
    table.scale(1, 1.3)
    ax_t.axis("off")
    ax_t.set_title(f"chaos verdict: {'VALID' if verdict.valid else 'INVALID'}")
    kinds = timeline["kind"].value_counts() if not timeline.empty else pd.Series(dtype=int)
    ax_f.barh(kinds.index.astype(str), kinds.to_numpy(), color="tab:purple")
    ax_f.set_title("faults injected")
    ax_f.tick_params(labelsize=7)
    fig.tight_layout()
    return fig
