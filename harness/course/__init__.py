"""Exercise checks for the course notebooks: an empty answer asks to be filled in, a wrong one
fails saying what is wrong, a right one says why it is right.

An exercise cell ships as `my_answer = None  # TODO`. Its check cell calls
`check(my_answer, judge)`: `judge(answer)` raises `AssertionError` naming what is wrong, or
returns the sentence that explains why the answer is right. The test suite runs each notebook
as shipped (every check prints FILL_IN), with the worked answers of `solutions/notebooks/`
(every check prints RIGHT) and with a wrong answer per check (every check raises).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

FILL_IN = "✋ fill this in first"
RIGHT = "✔ right"
NOT_YET = "✘ not yet"

# Every verdict of this kernel, in order: {"name", "verdict" ("right", "not yet" or
# "not answered"), "message"}. A grader reads it here, or from the JSON lines written to the
# file named by COURSE_RESULTS.
RESULTS: list[dict[str, str]] = []


class WrongAnswer(AssertionError):
    """A check's verdict on an answer that is filled in but wrong."""


def is_empty(answer: Any) -> bool:
    """True for None, and for a dict or list holding a None (a part left to do). Not for a
    tuple: pika's `basic_get` answers (None, None, None) when the queue is empty, and that is
    an answer to judge, not a blank."""
    if answer is None:
        return True
    if isinstance(answer, dict):
        return any(is_empty(v) for v in answer.values())
    if isinstance(answer, list):
        return any(v is None for v in answer)
    return False


def check(answer: Any, judge: Callable[[Any], str], *, name: str = "the answer") -> None:
    """Judge a filled-in answer: print why it is right, or raise WrongAnswer saying what is not.

    An empty answer (see `is_empty`) only prints FILL_IN, so that a notebook runs top to
    bottom as shipped. Nothing is returned (a check cell shows no stray True/False); each
    verdict is recorded in RESULTS (and $COURSE_RESULTS).
    """
    if is_empty(answer):
        message = f"{FILL_IN}: {name} is still None (the cell marked TODO above)."
        _record(name, "not answered", message)
        print(message)
        return
    try:
        why = judge(answer)
    except AssertionError as exc:
        message = f"{NOT_YET}: {exc}"
        _record(name, "not yet", message)
        raise WrongAnswer(message) from None
    _record(name, "right", f"{RIGHT}: {why}")
    print(f"{RIGHT}: {why}")


def _record(name: str, verdict: str, message: str) -> None:
    """Keep a verdict in RESULTS, and append it as a JSON line to $COURSE_RESULTS if set."""
    result = {"name": name, "verdict": verdict, "message": message}
    RESULTS.append(result)
    path = os.environ.get("COURSE_RESULTS")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(result, ensure_ascii=False) + "\n")


def labels_near(value: float, bins: Sequence[tuple[float, str]], *,
                slack: float = 0.1) -> tuple[str, set[str]]:
    """The label of the bin a measurement falls in, and every label within `slack` of it.

    `bins` are (upper edge, label) in rising order, the last edge `math.inf`; a bin holds
    the values from the previous edge up to, not including, its own. A measurement near an
    edge could land on either side in a second run, so both labels are right there.
    """
    lower, measured, near = -float("inf"), "", set()
    for upper, label in bins:
        if lower <= value < upper:
            measured = label
        if lower * (1 - slack) <= value < upper * (1 + slack):
            near.add(label)
        lower = upper
    if not measured:
        raise ValueError(f"{value} is in none of the bins {bins}")
    return measured, near


def public_url(url: str | None, public: str | None = None) -> str | None:
    """A local URL as a browser elsewhere reaches it, by LAB_PUBLIC_HOST.

    LAB_PUBLIC_HOST is either a host name (`lab.example.edu`: same scheme and port) or a
    template with `{port}`, e.g. jupyter-server-proxy's
    `https://hub.example.edu/user/alice/proxy/{port}/`. Unset, the URL is returned as is.
    """
    public = public if public is not None else os.environ.get("LAB_PUBLIC_HOST", "")
    if not url or not public:
        return url
    parts = urlsplit(url)
    if "{port}" in public:
        return public.replace("{port}", str(parts.port))  # not format(): other braces stay
    return parts._replace(netloc=f"{public}:{parts.port}" if parts.port else public).geturl()


def compare_prediction(what: str, predicted: Any, measured: Any, why: str, *,
                       tolerance: float = 0.0, relative: float = 0.0) -> str:
    """Score a `my_prediction...` against the run: say how far off it was, and why the run
    came out as it did. Numbers are close within max(tolerance, relative x measured); other
    values must be equal. Prints the sentence (never ✔/✘: a prediction is not graded) and
    returns it."""
    if predicted is None:
        line = f"→ {what}: you made no prediction; the run measured {measured}. {why}"
    elif isinstance(measured, int | float) and isinstance(predicted, int | float) \
            and not isinstance(predicted, bool):
        off = predicted - measured
        slack = max(tolerance, relative * abs(measured))
        verdict = ("close" if abs(off) <= slack else
                   f"{'over' if off > 0 else 'under'} by {abs(off):.3g}")
        line = f"→ {what}: you predicted {predicted:.3g}, the run measured {measured:.3g} " \
               f"({verdict}). {why}"
    else:
        verdict = "right" if predicted == measured else "not what happened"
        line = f"→ {what}: you predicted {predicted!r}, the run gave {measured!r} ({verdict}). " \
               f"{why}"
    print(line)
    return line
