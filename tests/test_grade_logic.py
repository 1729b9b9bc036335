"""The grade card's pure logic: contract gaps leave only the checks that needed them
unjudged, and a whole-run verdict is split into rows judged one by one."""

from __future__ import annotations

from harness.grading import gaps, verdicts
from harness.invariants import Check, Verdict
from harness.lab.client import ContractGap


def check(name: str, passed: bool | None = True) -> Check:
    return Check("baseline", name, "tried", "expected", "happened", passed)


def test_a_gap_unjudges_only_the_checks_that_need_what_it_hides():
    hidden = [ContractGap("GET /reservations (inventory)", "answered 404", ("ledger",))]
    out = {c.name: c for c in gaps.unjudge(
        [check("nothing lost", False), check("no double reservation"),
         check("stock conserved"), check("services stay up")], hidden)}
    assert out["nothing lost"].passed is False  # a real failure keeps its verdict
    assert out["services stay up"].passed is True
    for name in ("no double reservation", "stock conserved"):
        assert out[name].passed is None and out[name].evidence["not_judged"] is True
        assert "GET /reservations (inventory) answered 404" in out[name].happened
    card_gaps = gaps.summarise([("baseline", hidden, list(out.values()))])
    assert card_gaps == [{"what": "GET /reservations (inventory)", "detail": "answered 404",
                          "scenarios": ["baseline"],
                          "checks_not_judged": ["baseline: no double reservation",
                                                "baseline: stock conserved"]}]


def test_a_missing_amqp_name_is_a_gap_of_its_own():
    import pika.exceptions
    exc = pika.exceptions.ChannelClosedByBroker(
        404, "NOT_FOUND - no queue 'dlq' in vhost 'lab-1'")
    assert gaps.gap_of(exc) == ContractGap("queue 'dlq'", "does not exist")
    assert gaps.gap_of(ValueError("x")) is None


def chaos_verdict(**counts) -> Verdict:
    base = dict.fromkeys(verdicts.ROWS, 0)
    base.update(counts)
    problems = [f"{counts['lost']} accepted orders without exactly one notification"] \
        if counts.get("lost") else []
    return Verdict(not any(base.values()), base, problems)


def test_the_contracts_503_is_no_server_error():
    rows = {c.name: c for c in verdicts.split(
        "chaos", "t", chaos_verdict(http_5xx=148, answers={"201": 50, "503": 148}), {}, {})}
    assert rows["no server errors"].passed is True
    rows = {c.name: c for c in verdicts.split(
        "chaos", "t", chaos_verdict(http_5xx=3, answers={"500": 3}), {}, {})}
    assert rows["no server errors"].passed is False and "500" in rows["no server errors"].happened


def test_status_checks_are_skipped_when_the_order_service_never_updates_a_status():
    v = chaos_verdict(status_mismatch=40, stalled_queues=1, lost=2)
    summary = {"queues_left": {"order_status": 40}}
    rows = {c.name: c for c in verdicts.split("chaos", "t", v, summary, {})}
    assert rows["order status follows the outcome"].evidence["skipped"] is True
    assert rows["queues drained"].passed is True
    assert rows["nothing lost"].passed is False and "2 accepted" in rows["nothing lost"].happened
    # With status updates in use, the same counts fail.
    rows = {c.name: c for c in verdicts.split("chaos", "t", v, summary,
                                              {"status_updates": True})}
    assert rows["order status follows the outcome"].passed is False
    assert rows["queues drained"].passed is False


def test_a_verdict_without_the_whole_run_counts_is_not_split():
    assert verdicts.split("x", "t", Verdict(True, {"lost": 0}), {}, {}) is None


def test_the_card_lists_gaps_first_and_counts_unjudged_checks(tmp_path):
    from harness.grading.grade import ReportCard, ScenarioGrade
    from harness.reporting.card import html_page, markdown
    hidden = [ContractGap("GET /reservations (inventory)", "answered 404", ("ledger",))]
    checks = gaps.unjudge([check("nothing lost", False), check("no double reservation")],
                          hidden)
    card = ReportCard("shop", None, "local", [ScenarioGrade("baseline", "s", checks, gaps=hidden)],
                      tmp_path, "now", gaps.summarise([("baseline", hidden, checks)]))
    assert not card.passed
    assert card.counts() == {"passed": 0, "failed": 1, "not_run": 0, "skipped": 0,
                             "not_judged": 1, "contract_gaps": 1}
    md = markdown(card)
    assert md.index("## Fix this first") < md.index("## What to fix") < md.index("## Every")
    fix = md[md.index("## What to fix"):md.index("## Every")]
    # A check a gap left unjudged is listed once, under its gap.
    assert "nothing lost" in fix and "no double reservation" not in fix
    page = html_page(card)
    assert page.index("id='gaps'") < page.index("id='failures'")
    assert "tr class='check UNJUDGED'" in page
    assert card.to_dict()["contract_gaps"][0]["checks_not_judged"] == [
        "baseline: no double reservation"]


def test_zero_orders_to_wait_for_is_an_answer_not_a_timeout():
    from harness.lab.client import LabClient

    class Quiet(LabClient):
        def notifications(self):
            return []

    # Before, an empty list counted as "not yet" and this raised WaitTimeout.
    assert Quiet().wait_notified([], timeout=2) == []
