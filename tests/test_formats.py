"""Scores and formats of a report card (pure logic on card data shaped like report.json):
points per scenario shared by weight, a stopped grade scored zero and said once, Gradescope's
results.json valid against its schema, JUnit XML, the Markdown job summary."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import jsonschema
import pytest

from harness.grading import formats
from harness.grading.scores import Rubric, RubricError, load_rubric, normalise, score_card


def check(scenario, name, passed, happened="ok", **evidence):
    return {"scenario": scenario, "name": name, "tried": f"tried {name}",
            "expected": f"expected {name}", "happened": happened, "passed": passed,
            "evidence": evidence, "chart": None}


def card(*scenarios):
    return {"impl": "alice", "scenarios": [
        {"name": name, "summary": "", "error": None, "log_tail": None, "run_dir": None,
         "checks": checks} for name, checks in scenarios]}


MIXED = card(
    ("baseline", [check("baseline", "nothing lost", True), check("baseline", "stock", True)]),
    ("kill-9", [check("kill-9", "nothing lost", False,
                      "3 orders answered 201 were never notified (ORD-1a2b, ORD-99): did you "
                      "ack before the work was done?"),
                check("kill-9", "services stay up", True)]),
    ("reconnect", [check("reconnect", "(scenario)", None, "skipped: it restarts the broker",
                         skipped=True)]),
)


def test_points_are_shared_by_weight_and_skips_count_for_nothing():
    rubric = Rubric(points={"kill-9": 20}, weights={"kill-9/nothing lost": 3})
    scored = score_card(MIXED, rubric)
    points = {(c.scenario, c.name): (c.score, c.max_score) for c in scored.checks}
    assert points[("baseline", "nothing lost")] == (5.0, 5.0)
    assert points[("kill-9", "nothing lost")] == (0.0, 15.0)
    assert points[("kill-9", "services stay up")] == (5.0, 5.0)
    assert scored.score == 15.0 and scored.max_score == 30.0
    assert scored.skipped == [("reconnect", "skipped: it restarts the broker")]
    assert not scored.passed


def test_a_service_that_never_started_scores_zero_and_is_said_once():
    why = "the inventory service exited with code 3"
    stopped = card(*[(s, [check(s, "(scenario)", None, why, log_tail="boom")])
                     for s in ("baseline", "kill-9")])
    # A fail-fast card stops after the first scenario: the others still count, at zero.
    scored = score_card(stopped, expected=["baseline", "kill-9", "malformed"])
    assert scored.score == 0 and scored.max_score == 30
    assert len(scored.not_run) == 1
    assert scored.not_run[0].scenarios == ("baseline", "kill-9", "malformed")
    data = formats.gradescope(scored)
    formats.validate_gradescope(data)
    assert [t["name"] for t in data["tests"]] == ["could not run: baseline, kill-9, malformed"]
    assert data["output"].count(why) == 1
    assert "boom" in data["tests"][0]["output"]


def test_gradescope_results_validate_and_carry_tried_expected_happened():
    scored = score_card(MIXED, load_rubric(None))
    data = formats.gradescope(scored, Rubric(visibility={"kill-9": "after_due_date"}),
                              execution_time=12.34)
    formats.validate_gradescope(data)
    assert data["score"] == scored.score == sum(t["score"] for t in data["tests"])
    lost = next(t for t in data["tests"] if t["name"] == "kill-9: nothing lost")
    assert lost["status"] == "failed" and lost["visibility"] == "after_due_date"
    assert "Tried: tried nothing lost" in lost["output"] and "did you ack" in lost["output"]
    assert "Skipped reconnect" in data["output"]


def test_the_schema_rejects_what_gradescope_would():
    schema = json.loads(formats.SCHEMA.read_text())
    for bad in ({"tests": [{"name": "no score"}]}, {"score": "10"},
                {"score": 1, "visibility": "sometimes"},
                {"score": 1, "tests": [{"score": 1, "status": "ok"}]}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_junit_has_a_failure_per_failed_check_and_the_score():
    root = ET.fromstring(formats.junit(score_card(MIXED)))
    suite = root.find("testsuite")
    assert suite.get("failures") == "1" and suite.get("skipped") == "0"
    failed = [c for c in suite.iter("testcase") if c.find("failure") is not None]
    assert [(c.get("classname"), c.get("name")) for c in failed] == [("kill-9", "nothing lost")]
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props == {"score": "15", "max_score": "20"}


def test_summary_says_what_to_fix_with_points(tmp_path):
    path = formats.write("summary", score_card(MIXED), tmp_path)
    text = path.read_text()
    assert "Score 15 / 20" in text and "## What to fix" in text
    assert "**kill-9: nothing lost** (5 points)" in text


def test_a_rubric_file_is_read_and_a_bad_one_named(tmp_path):
    good = tmp_path / "rubric.toml"
    good.write_text('default_points = 4\n[points]\nkill-9 = 8\n[weights]\n'
                    '"kill-9/nothing lost" = 2\n[visibility]\nchaos = "hidden"\n')
    rubric = load_rubric(good)
    assert rubric.scenario_points("kill-9") == 8 and rubric.scenario_points("x") == 4
    assert rubric.visible("chaos") == "hidden" and rubric.visible("x") == "visible"
    for text, word in (("[points]\nx = -1\n", "points.x"), ("pionts = 1\n", "pionts"),
                       ('[visibility]\nx = "soon"\n', "visibility")):
        good.write_text(text)
        with pytest.raises(RubricError, match=word):
            load_rubric(good)


def test_the_shipped_example_rubric_loads():
    from pathlib import Path
    rubric = load_rubric(Path(__file__).parents[1] / "examples" / "rubric.toml")
    assert rubric.scenario_points("kill-9") == 20


def test_two_students_same_mistake_read_the_same():
    a = normalise("3 orders answered 201 were never notified (ORD-1a2b, ORD-99): ack?")
    b = normalise("17 orders answered 201 were never notified (ORD-ffff): ack?")
    assert a == b
