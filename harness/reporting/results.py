"""Results of a scenario, and the run folder they are written to: JSON, CSV, PNG, logs."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from harness.invariants import INVARIANTS, Check, Verdict


def run_folder(out: str | Path, scenario: str) -> Path:
    """A new folder `OUT/<scenario>-<UTC timestamp>/` for one run."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    path = Path(out) / f"{scenario}-{stamp}"
    path.mkdir(parents=True, exist_ok=False)
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


@dataclass
class ScenarioResult:
    """What a scenario measured and concluded, renderable in a notebook and on disk."""

    name: str
    summary: Mapping[str, Any]  # a typed Summary (harness.scenarios.summary) or a dict
    verdict: Verdict
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    timeline: pd.DataFrame = field(default_factory=pd.DataFrame)
    figures: dict[str, Figure] = field(default_factory=dict)
    run_dir: Path | None = None
    checks: list[Check] = field(default_factory=list)  # the report card's rows (black-box)

    @property
    def valid(self) -> bool:
        """The checker's verdict."""
        return self.verdict.valid

    def write(self, run_dir: Path) -> Path:
        """Write summary.json, frames as CSV, figures as PNG and the timeline into run_dir."""
        run_dir.mkdir(parents=True, exist_ok=True)
        for name, frame in self.frames.items():
            frame.to_csv(run_dir / f"{name}.csv", index=False)
        self.timeline.to_csv(run_dir / "faults.csv", index=False)
        for name, fig in self.figures.items():
            fig.savefig(run_dir / f"{name}.png", dpi=110)
        plain = self.summary.to_dict() if hasattr(self.summary, "to_dict") else self.summary
        summary = {**plain, "verdict": self.verdict.to_dict(),
                   "valid": self.verdict.valid,
                   # Every invariant judged, from the one record: held or the ids breaking it.
                   "invariants": {k: {"name": INVARIANTS[k].name, "held": not ids,
                                      "broken": list(ids)[:20]}
                                  for k, ids in self.verdict.evidence.items() if k in INVARIANTS},
                   "checks": [c.to_dict() for c in self.checks],
                   "causes": _causes(self.checks),
                   "files": sorted(p.name for p in run_dir.iterdir() if p.is_file())}
        (run_dir / "summary.json").write_text(json.dumps(_jsonable(summary), indent=2) + "\n")
        self.run_dir = run_dir
        return run_dir

    def text(self) -> str:
        """A one-screen summary for a terminal."""
        lines = [f"== {self.name}: {'VALID' if self.valid else 'INVALID'} =="]
        for key, value in self.summary.items():
            if key in ("scenario",):
                continue
            if isinstance(value, dict):
                value = ", ".join(f"{k}={v}" for k, v in value.items())
            lines.append(f"  {key:<26} {value}")
        for problem in self.verdict.problems:
            lines.append(f"  ! {problem}")
        if self.run_dir:
            lines.append(f"  run folder: {self.run_dir}")
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        mark = "✅ valid" if self.valid else "❌ invalid"
        rows = "\n".join(f"| {k} | {v} |" for k, v in self.summary.items() if k != "scenario")
        problems = "".join(f"\n- {p}" for p in self.verdict.problems)
        return f"**{self.name}: {mark}**{problems}\n\n| measure | value |\n|---|---|\n{rows}\n"


def _causes(checks: list[Check]) -> list[dict[str, Any]]:
    """The root causes the failed checks point to, each once with the checks it broke."""
    from harness.grading.causes import root_causes
    return [{"cause": key, "advice": advice, "checks": [c.name for c in rows]}
            for key, advice, rows in root_causes(checks)]


def keep_logs(service_dir: Path, run_dir: Path) -> None:
    """Copy the services' log files into the run folder."""
    logs = run_dir / "logs"
    logs.mkdir(exist_ok=True)
    for log in service_dir.glob("*.log"):
        shutil.copy(log, logs / log.name)


def combined_report(results: list[ScenarioResult], out_dir: Path, *,
                    took_s: Mapping[str, float] | None = None,
                    skipped: list[str] | None = None, wall_s: float | None = None,
                    own_node: list[str] | None = None) -> Path:
    """One Markdown page that links every scenario's verdict, time taken and charts;
    INCOMPLETE (not valid) when a fault scenario was skipped. `wall_s` and `own_node` say
    how long the whole run took when some scenarios ran alongside on a node of their own."""
    took_s = took_s or {}
    verdict = ("INVALID" if any(not r.valid for r in results)
               else "INCOMPLETE" if skipped else "VALID")
    lines = ["# rabbit-lab: every scenario", "",
             f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M UTC}.", "",
             f"**{verdict}**" + (f": skipped {', '.join(skipped)}" if skipped else ""), "",
             "| scenario | verdict | took | run folder |", "|---|---|---|---|"]
    for r in results:
        rel = r.run_dir.relative_to(out_dir) if r.run_dir else "-"
        took = f"{took_s[r.name]:.0f} s" if r.name in took_s else "-"
        lines.append(f"| {r.name} | {'valid' if r.valid else '**INVALID**'} | {took} "
                     f"| [{rel}]({rel}) |")
    if took_s:
        took = f"All scenarios took {sum(took_s.values()):.0f} s."
        if own_node and wall_s is not None:
            took += (f" {', '.join(own_node)} ran alongside the others, each on a node of "
                     f"its own, so the whole run took {wall_s:.0f} s.")
        lines += ["", took]
    for r in results:
        lines += ["", f"## {r.name}", ""]
        lines += [f"- **{k}**: {v}" for k, v in r.summary.items() if k != "scenario"]
        lines += [f"- problem: {p}" for p in r.verdict.problems]
        if r.run_dir:
            rel = r.run_dir.relative_to(out_dir)
            lines += [""] + [f"![{name}]({rel}/{name}.png)" for name in r.figures]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
