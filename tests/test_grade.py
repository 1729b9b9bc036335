"""Grading real implementations end to end, CI-sized: the lab, the naive example, the
exercise (unfilled) and its solution, and a vhost-blind fixed-port service in a shell script.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import requests
from conftest import IN_CI

from harness.grading.grade import ReportCard, grade
from harness.ports import port_free
from harness.scenarios import registry

pytestmark = [pytest.mark.broker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
BLACK_BOX = [s.name for s in registry.black_box()]


@pytest.fixture(scope="module")
def graded(broker, tmp_path_factory):
    """Grade an implementation once per module (CI-sized), keyed by its spec path."""
    cards: dict[str, ReportCard] = {}

    def card_of(spec: str) -> ReportCard:
        if spec not in cards:
            impl = spec if spec == "lab" else ROOT / spec
            cards[spec] = grade(impl, broker, small=True, progress=False,
                                out=tmp_path_factory.mktemp("grade"))
        return cards[spec]
    return card_of


def verdicts(card: ReportCard) -> dict[tuple[str, str], bool | None]:
    return {(c.scenario, c.name): c.passed for c in card.checks}


def test_the_labs_own_services_pass_every_black_box_check(graded):
    card = graded("lab")
    assert card.passed, card.text()
    assert {c.scenario for c in card.checks} == set(BLACK_BOX)
    assert card.counts()["failed"] == card.counts()["not_run"] == 0
    assert (card.run_dir / "report.md").exists() and (card.run_dir / "report.html").exists()
    data = json.loads((card.run_dir / "report.json").read_text())
    assert data["passed"] is True and len(data["scenarios"]) == len(BLACK_BOX)


def test_the_naive_example_passes_the_baseline_flow_and_fails_what_its_design_deserves(graded):
    card = graded("examples/naive/impl.toml")
    v = verdicts(card)
    assert not card.passed
    # Orders flow; but its order service validates little: the probe of invalid requests
    # (a NaN price, a 128 KiB body, text/plain) gets 201s, and events are published for them.
    probe = {"invalid requests refused", "invalid requests publish nothing"}
    assert all(ok for (scenario, name), ok in v.items()
               if scenario == "baseline" and name not in probe), card.text()
    assert v[("baseline", "invalid requests refused")] is False
    assert v[("baseline", "invalid requests publish nothing")] is False
    # An in-memory processed set: copies are caught until the inventory restarts.
    assert v[("duplicates", "exact copy: not reserved twice")] is True
    assert v[("restart-idempotency", "exact copy: not reserved twice")] is False
    # Rejected without a reason.
    assert v[("malformed", "dead letters say why")] is False
    assert v[("malformed", "consuming goes on after a malformed message")] is True
    # Acked before the work was done.
    assert v[("kill-9", "nothing lost")] is False
    # (Keyed by scenario too: chaos's rows share some names, e.g. "nothing lost".)
    words = {(c.scenario, c.name): c.happened for c in card.checks if c.passed is False}
    assert "your processed-order record did not survive the restart" in \
        words[("restart-idempotency", "exact copy: not reserved twice")]
    assert "did you ack before the work was done" in words[("kill-9", "nothing lost")]
    assert "x-reject-reason" in words[("malformed", "dead letters say why")]


def test_the_reference_solution_passes_everything(graded):
    card = graded("solutions/inventory/impl.toml")
    assert card.passed, card.text()
    assert card.counts()["failed"] == card.counts()["not_run"] == 0


def test_with_lanes_the_card_is_the_same_and_scenarios_ran_side_by_side(tmp_path, caplog):
    """What `python -m harness grade` does on a local node: the node of the scenario that
    restarts the broker booted alongside the grade's own, the others two at a time."""
    only = ["baseline", "stock-exhaustion", "duplicates", "malformed", "reconnect"]
    caplog.set_level("INFO")
    card = grade(ROOT / "solutions/inventory/impl.toml", None, broker_kind="local",
                 small=True, only=only, progress=False, out=tmp_path,
                 own_node_for_restarts=True)
    assert card.passed, card.text()
    assert [g.name for g in card.scenarios] == only  # the card's order, whoever ran first
    assert "reconnect: on a local node of its own" in caplog.text
    spans = []
    for g in card.scenarios:
        if g.name != "reconnect":
            began = datetime.strptime(g.run_dir.name.rsplit("-", 1)[1], "%Y%m%dT%H%M%S.%fZ")
            took = json.loads((g.run_dir / "summary.json").read_text())["duration_s"]
            spans.append((began.timestamp(), began.timestamp() + took))
    assert any(a[0] < b[1] and b[0] < a[1] for i, a in enumerate(spans) for b in spans[i + 1:])


def test_the_unfilled_starter_fails_clearly(graded):
    card = graded("exercises/inventory/impl.toml")
    assert not card.passed
    # One finding, with its log tail; the grade stops there (the rest say why they did not run).
    first, *rest = card.checks
    assert first.passed is None and "inventory service exited with code 3" in first.happened
    assert "handle_order is not written yet" in first.evidence["log_tail"]
    assert "Traceback" not in first.evidence["log_tail"]
    assert first.evidence["port_opened"] is False
    assert rest and all(c.evidence.get("skipped") and "never came up" in c.happened
                        for c in rest)


def test_a_vhost_blind_fixed_port_service_started_by_a_shell_script(broker, tmp_path):
    taken = [p for p in (5001, 5002, 5003) if not port_free(p)]
    if 5003 in taken and not IN_CI:
        pytest.skip(f"ports {taken} are taken on this machine")
    # It keeps its notifications in memory, on purpose (a few dozen lines): chaos's kill -9
    # loses them, and the card says so. What this test proves is that such a program is
    # driven end to end, so it is graded on the other black-box scenarios.
    # The session's broker says which kind of fresh broker it gets (of its own: vhost-blind).
    card = grade(ROOT / "tests/impls/fixed_port_notification/impl.toml", broker, small=True,
                 progress=False, out=tmp_path, only=[n for n in BLACK_BOX if n != "chaos"])
    assert card.passed, card.text()
    assert card.broker == broker.provider  # a broker of its own, with the spec's user


def test_pytest_impl_runs_the_checks_as_test_cases(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/test_autograde.py", "-q", "-p",
         "no:cacheprovider", "--impl", "examples/naive/impl.toml", "-k", "restart"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "1 failed" in proc.stdout
    assert "did not survive the restart" in proc.stdout


def test_the_html_card_renders_in_a_real_browser(graded, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By
    card = graded("examples/naive/impl.toml")
    options = webdriver.ChromeOptions()
    # No network here: without the background-networking flags Chromium keeps trying
    # Google's hosts at every start.
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(arg)
    if Path("/usr/bin/chromium").exists():
        options.binary_location = "/usr/bin/chromium"
    try:
        service = webdriver.ChromeService(executable_path="/usr/bin/chromedriver") \
            if Path("/usr/bin/chromedriver").exists() else None
        driver = webdriver.Chrome(options=options, service=service)
    except Exception as exc:
        if IN_CI:
            raise
        pytest.skip(f"no headless chromium here: {exc}")
    try:
        driver.get((card.run_dir / "report.html").as_uri())
        rows = driver.find_elements(By.CSS_SELECTOR, "table#checks tr.check")
        assert len(rows) == len(card.checks)
        shown = {(r.get_attribute("data-scenario"), r.find_elements(By.TAG_NAME, "td")[1].text)
                 for r in rows}
        assert shown == {(c.scenario, c.name) for c in card.checks}
        charts = driver.find_elements(By.CSS_SELECTOR, "img.chart")
        assert len(charts) == sum(len(s.charts) for s in card.scenarios) > 0
        for img in charts:  # decoded and laid out: the embedded PNG is a real image
            assert driver.execute_script(
                "return arguments[0].complete && arguments[0].naturalWidth", img) > 100
        assert driver.find_element(By.ID, "verdict").get_attribute("data-passed") == "false"
        assert len(driver.find_elements(By.CSS_SELECTOR, "tr.check.FAIL")) == \
            card.counts()["failed"]
    finally:
        driver.quit()


def test_replicas_of_one_service_share_its_data_dir_and_the_work(broker, tmp_path):
    from harness.lab import Lab
    from harness.load import LoadSpec, place_orders
    impl = ROOT / "solutions/inventory/impl.toml"
    with Lab(broker, impl=impl, replicas={"inventory": 2}, workdir=tmp_path) as lab:
        inv = lab.processes["inventory"]
        assert len(inv) == 2 and all(p.running for p in inv)
        assert inv[0].port != inv[1].port and inv[0].env["DATA_DIR"] == inv[1].env["DATA_DIR"]
        load = place_orders(lab.url("order"), LoadSpec(orders=30, concurrency=4, progress=False))
        ids = load.loc[load["accepted"], "order_id"].tolist()
        assert len(ids) == 30
        lab.wait_notified(ids, timeout=60)
        # Either replica answers from the one shared store.
        ledgers = [requests.get(p.url + "/reservations", timeout=5).json() for p in inv]
        assert ledgers[0] == ledgers[1]
        assert {o["order_id"] for o in ledgers[0]["outcomes"]} >= set(ids)
        lab.kill("inventory", replica=0)
        assert not inv[0].running and inv[1].running


def test_checks_that_the_other_implementations_pass_can_fail(broker, tmp_path):
    # Exits on a malformed message and on broker loss.
    card = grade(ROOT / "tests/impls/fragile_inventory/impl.toml", broker, small=True,
                 only=["malformed", "reconnect"], out=tmp_path, progress=False)
    v = {c.name: c for c in card.checks}
    assert "consuming goes on after a malformed message" in v, card.text()
    assert v["consuming goes on after a malformed message"].passed is False
    assert "stopped consuming after a malformed message" in \
        v["consuming goes on after a malformed message"].happened
    assert v["services reconnect by themselves"].passed is False
    assert "inventory did not come back by itself" in v["services reconnect by themselves"].happened
    died = [c for c in card.checks if c.name == "services stay up"]
    assert len(died) == 2 and not any(c.passed for c in died)
    assert "giving up" in died[0].evidence["log_tail"]  # malformed: its last words
    assert "the inventory process exited" in died[0].happened
    # The lab's own inventory without a duplicate check reserves every copy again.
    from harness import scenarios
    result = scenarios.duplicates(broker, orders=3, idempotency="off", out=tmp_path,
                                  progress=False)
    d = {c.name: c for c in result.checks}
    assert d["exact copy: not reserved twice"].passed is False
    assert "check whether you processed the order" in d["exact copy: not reserved twice"].happened
    assert d["copy with a new event_id: not reserved twice"].passed is False
    # No check at all (not a check keyed on event_id): the cause says so for both copies.
    assert "check whether you processed the order" in \
        d["copy with a new event_id: not reserved twice"].happened
