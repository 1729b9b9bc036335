"""Points for a report card: each scenario is worth points, shared among its checks by weight.

An instructor keeps a small `rubric.toml` (see examples/rubric.toml); every key is optional:

    default_points = 10            # a scenario not named under [points]
    [points]
    kill-9 = 20                    # every check of the scenario shares these
    [weights]
    "kill-9/nothing lost" = 3      # this check weighs 3 (the others of kill-9 weigh 1)
    [visibility]                   # Gradescope's: visible, hidden, after_due_date, after_published
    default = "visible"
    chaos = "after_due_date"

A check earns its points when it passed. The maximum is the same for every student: a
scenario that could not run (or, after a fail-fast, never started) still counts its points,
scores zero, and the reason is said once for all the scenarios it stopped. A skipped
scenario (the broker cannot do what it needs) counts for nothing either way, and says so.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

VISIBILITIES = ("visible", "hidden", "after_due_date", "after_published")


class RubricError(ValueError):
    """A rubric file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Rubric:
    """Points per scenario, weights per check, Gradescope visibility per scenario."""

    default_points: float = 10.0
    points: dict[str, float] = field(default_factory=dict)  # scenario -> points
    weights: dict[str, float] = field(default_factory=dict)  # "scenario/check" -> weight
    visibility: dict[str, str] = field(default_factory=dict)  # scenario or "default" -> it

    def scenario_points(self, scenario: str) -> float:
        """What the scenario is worth."""
        return self.points.get(scenario, self.default_points)

    def weight(self, scenario: str, check: str) -> float:
        """A check's share of its scenario's points, relative to its siblings (default 1)."""
        return self.weights.get(f"{scenario}/{check}", 1.0)

    def visible(self, scenario: str) -> str:
        """The Gradescope visibility of the scenario's tests."""
        return self.visibility.get(scenario, self.visibility.get("default", "visible"))


def load_rubric(path: str | Path | None) -> Rubric:
    """Read a rubric.toml (None: the default rubric, 10 points per scenario)."""
    if path is None:
        return Rubric()
    where = Path(path)
    try:
        raw = tomllib.loads(where.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RubricError(f"{where}: {exc}") from None
    unknown = set(raw) - {"default_points", "points", "weights", "visibility"}
    if unknown:
        raise RubricError(f"{where}: unknown key {sorted(unknown)[0]!r}")

    def numbers(table: str) -> dict[str, float]:
        got = raw.get(table, {})
        if not isinstance(got, dict):
            raise RubricError(f"{where}: [{table}] must be a table")
        for key, value in got.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise RubricError(f"{where}: {table}.{key} must be a number >= 0")
        return {k: float(v) for k, v in got.items()}

    default = raw.get("default_points", 10)
    if isinstance(default, bool) or not isinstance(default, int | float) or default < 0:
        raise RubricError(f"{where}: default_points must be a number >= 0")
    shown = raw.get("visibility", {})
    if not isinstance(shown, dict) or any(v not in VISIBILITIES for v in shown.values()):
        raise RubricError(f"{where}: [visibility] values must be one of {VISIBILITIES}")
    return Rubric(float(default), numbers("points"), numbers("weights"), dict(shown))


@dataclass(frozen=True)
class ScoredCheck:
    """One check with its points: verdict is PASS, FAIL, NOT RUN or SKIP."""

    scenario: str
    name: str
    verdict: str
    score: float
    max_score: float
    tried: str
    expected: str
    happened: str
    cause: str = ""  # the finding's cause, for grouping a class's mistakes


@dataclass(frozen=True)
class NotRun:
    """Scenarios stopped by one reason: zero of their points, said once."""

    reason: str
    scenarios: tuple[str, ...]
    max_score: float
    log_tail: str = ""


@dataclass
class Scored:
    """A card's checks with points, and the scenarios that could not run, grouped by reason."""

    impl: str
    checks: list[ScoredCheck]
    not_run: list[NotRun]
    skipped: list[tuple[str, str]]  # (scenario, why)

    @property
    def score(self) -> float:
        """Points earned."""
        return round(sum(c.score for c in self.checks), 2)

    @property
    def max_score(self) -> float:
        """Points available, the same for every implementation graded on the same scenarios."""
        return round(sum(c.max_score for c in self.checks)
                     + sum(n.max_score for n in self.not_run), 2)

    @property
    def passed(self) -> bool:
        """True iff every check passed and nothing was left unrun."""
        return not self.not_run and all(c.verdict == "PASS" for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        """The scored card as JSON-able data (read back with `Scored.from_dict`)."""
        return {"impl": self.impl, "score": self.score, "max_score": self.max_score,
                "passed": self.passed, "checks": [asdict(c) for c in self.checks],
                "not_run": [asdict(n) for n in self.not_run],
                "skipped": [list(s) for s in self.skipped]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scored:
        """The scored card `to_dict` wrote."""
        return cls(data["impl"], [ScoredCheck(**c) for c in data["checks"]],
                   [NotRun(**{**n, "scenarios": tuple(n["scenarios"])}) for n in data["not_run"]],
                   [(s, why) for s, why in data["skipped"]])

    def verdicts(self) -> dict[str, str]:
        """'scenario/check' -> verdict, with NOT RUN for every scenario that could not run."""
        out = {f"{c.scenario}/{c.name}": c.verdict for c in self.checks}
        for n in self.not_run:
            out.update({f"{s}/(scenario)": "NOT RUN" for s in n.scenarios})
        out.update({f"{s}/(scenario)": "SKIP" for s, _ in self.skipped})
        return out


def _verdict(check: dict[str, Any]) -> str:
    if check.get("passed") is True:
        return "PASS"
    if check.get("passed") is False:
        return "FAIL"
    return "SKIP" if (check.get("evidence") or {}).get("skipped") is True else "NOT RUN"


def cause_of(check: dict[str, Any]) -> str:
    """The finding's cause: the card's own when it names one, else the check's hint with its
    numbers and ids taken out (so that two students' same mistake reads the same)."""
    evidence = check.get("evidence") or {}
    for key in ("cause", "root_cause"):
        if isinstance(evidence.get(key), str) and evidence[key]:
            return evidence[key]
    return normalise(str(check.get("happened", "")))


def normalise(text: str) -> str:
    """Text with ids and numbers replaced by placeholders, first line, at most 240 characters."""
    import re
    line = text.strip().splitlines()[0] if text.strip() else ""
    line = re.sub(r"\b[A-Z]{2,}-[\w-]+", "ID", line)  # ORD-..., EVT-...
    line = re.sub(r"\b[0-9a-f]{8,}\b", "ID", line)
    line = re.sub(r"(?<!code )-?\b\d+(\.\d+)?", "N", line)  # an exit code stays: it says what
    line = re.sub(r"ID(, ID)*( and N more)?", "ID", line)  # a list of ids reads as one
    return line[:240]


def score_card(card: dict[str, Any], rubric: Rubric | None = None,
               expected: Iterable[str] | None = None, *, stopped: str | None = None) -> Scored:
    """Score a card (report.json's data).

    Args:
        card: the card as `ReportCard.to_dict()` (or report.json) gives it.
        rubric: points and weights (default: 10 points per scenario, checks weigh 1).
        expected: the scenarios graded; one missing from the card (a fail-fast stopped
            grading) counts as not run for the reason that stopped the card.
        stopped: the reason for the missing ones when the card gives none (the grade was
            killed at its time limit, say).
    """
    rubric = rubric or Rubric()
    checks: list[ScoredCheck] = []
    reasons: dict[str, list[str]] = {}
    tails: dict[str, str] = {}
    skipped: list[tuple[str, str]] = []
    seen: list[str] = []
    for sc in card.get("scenarios", []):
        name = sc["name"]
        seen.append(name)
        rows = sc.get("checks", [])
        verdicts = [_verdict(c) for c in rows]
        if rows and all(v == "SKIP" for v in verdicts):
            skipped.append((name, str(rows[0].get("happened", "skipped"))))
            continue
        halted = [c for c, v in zip(rows, verdicts, strict=True)
                  if v == "NOT RUN" and c.get("name") == "(scenario)"]
        if halted or not rows:
            why = str(halted[0].get("happened")) if halted else str(sc.get("error") or
                                                                   "the scenario gave no check")
            reasons.setdefault(why, []).append(name)
            tails.setdefault(why, str(sc.get("log_tail") or
                                      (halted[0].get("evidence") or {}).get("log_tail") or ""
                                      if halted else ""))
            continue
        judged = [(c, v) for c, v in zip(rows, verdicts, strict=True) if v != "SKIP"]
        total = sum(rubric.weight(name, c["name"]) for c, _ in judged) or 1.0
        for c, v in zip(rows, verdicts, strict=True):
            share = 0.0 if v == "SKIP" else \
                rubric.scenario_points(name) * rubric.weight(name, c["name"]) / total
            checks.append(ScoredCheck(
                name, c["name"], v, share if v == "PASS" else 0.0, share,
                str(c.get("tried", "")), str(c.get("expected", "")), str(c.get("happened", "")),
                cause_of(c) if v in ("FAIL", "NOT RUN") else ""))
    missing = [s for s in (expected or []) if s not in seen]
    if missing:
        why = stopped or next(iter(reasons), "grading stopped before these scenarios ran")
        reasons.setdefault(why, []).extend(missing)
    not_run = [NotRun(why, tuple(names), round(sum(rubric.scenario_points(s) for s in names), 2),
                      tails.get(why, "")) for why, names in reasons.items()]
    return Scored(str(card.get("impl", "?")), checks, not_run, skipped)
