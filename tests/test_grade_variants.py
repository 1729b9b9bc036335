"""The grader graded: small implementations under tests/impls/, each broken in one real way
(or correct in a different way), must get the verdict AND the cause they deserve.

CI-sized: each runs only the scenarios that matter for it (`only`), with few orders. The
variants under CAUGHT_BY_OUTCOMES are caught by outcome checks (stock exhaustion, invalid
requests probed, broker nacks injected, republished FAILED orders, outcomes held through a
broker restart). Each expected row names the words its card must say (the evidence read)
and, where the row has one, the cause key: a right verdict for a wrong reason fails.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness.grading.grade import ReportCard, grade

pytestmark = [pytest.mark.broker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ROOT / "tests" / "impls" / "variants"


@dataclass
class Case:
    """A spec, the scenarios to run, and per check name: (verdict, the words its card must
    say, [the cause key it must name: None for none]). Words: one string or a tuple."""

    spec: str
    only: list[str]
    expect: dict[str, tuple] = field(default_factory=dict)
    passes: bool = False  # correct but different: the whole card passes
    kwargs: dict[str, dict] = field(default_factory=dict)  # per scenario, to keep it short

    @property
    def path(self) -> Path:
        return VARIANTS / f"{self.spec}.toml" if "/" not in self.spec else ROOT / self.spec


BROKEN = {
    "ack-first": Case("ack_first", ["kill-9"], {
        "nothing lost": (False, ("no ledger row and no DLQ copy", "did you ack before the work "
                                 "was done"), "ack_before_work")}),
    "requeue-poison": Case("requeue_poison", ["malformed"], {
        "malformed messages dead-lettered": (False, "dlq holds 0 of the"),
        "no poison loop": (False, ("redeliveries in", "never dead-lettered"), "requeue_forever"),
        "consuming goes on after a malformed message": (True, "valid orders behind them were "
                                                              "notified", None)}),
    "in-memory-idempotency": Case("in_memory", ["restart-idempotency"], {
        "exact copy: not reserved twice": (False, "did not survive the restart")}),
    "event-id-keys": Case("event_id_keys", ["duplicates"], {
        "exact copy: not reserved twice": (True, "none of the", None),
        "copy with a new event_id: not reserved twice": (False, "by its order_id",
                                                         "keyed_on_event_id")}),
}
# Broker nacks come from a reject-publish policy on inventory_reserved; transient outcomes
# are lost where the reconnect scenario restarts the broker while they wait in their queue
# (the notification service stopped: harness.scenarios.held_outcomes).
CAUGHT_BY_OUTCOMES = {
    "oversell": Case("oversell", ["stock-exhaustion"], {
        "stock never below zero": (False, "Evidence: stock below zero: item_",
                                   "no_stock_check")}),
    "never-published-inventory-failed": Case("never_failed", ["stock-exhaustion"], {
        "nothing lost": (False, ("FAILED in the ledger", "the stock could not cover them",
                                 "no FAILED order was ever notified"),
                         "failed_never_published")}),
    "fresh-outcome-for-a-duplicate": Case("fresh_outcome", ["duplicates"], {
        "a FAILED order stays FAILED": (False, ("GET /order says RESERVED",
                                                "with 0 reservation lines"), "fresh_outcome")}),
    "pk-only-duplicates": Case("pk_only", ["duplicates"], {
        "no valid order dead-lettered": (False, ("DLQ reason for", "IntegrityError"),
                                         "pk_duplicate")}),
    "ignored-nacks": Case("ignored_nacks", ["broker-nacks"], {
        "nothing lost": (False, ("refused every publish to inventory_reserved",
                                 "reserved in the ledger"), "outcome_refused")}),
    "no-confirms": Case("no_confirms", ["broker-nacks"], {
        "nothing lost": (False, ("refused every publish to inventory_reserved",
                                 "reserved in the ledger"), "outcome_refused")}),
    "transient-outcomes": Case("transient", ["reconnect"], {
        "nothing lost": (False, ("as a transient message", "before the broker restart and 0 "
                                 "after it"), "transient_outcomes")}),
    "no-http-validation": Case("no_validation", ["baseline"], {
        "invalid requests refused": (False, "validate every field")}),
}
CORRECT = {
    "direct-publishing": Case("direct", ["chaos"], passes=True),
    # Nothing consumes order_status here: chaos's settling waits out its bound for it.
    "no-status-consumer": Case("no_status", ["chaos"], passes=True,
                               kwargs={"chaos": {"settle_s": 20.0}}),
    "slow-handler-150ms": Case("slow", ["backlog-drain"], passes=True),
    "fixed-ports-in-a-namespace": Case("tests/impls/fixed_ports/impl.toml", ["reconnect"],
                                       passes=True),
}


def graded(case: Case, broker, tmp_path) -> ReportCard:
    return grade(case.path, broker, small=True, progress=False, out=tmp_path, only=case.only,
                 scenario_kwargs=case.kwargs)


def judge(card: ReportCard, case: Case) -> None:
    rows = {c.name: c for c in card.checks}
    if case.passes:
        assert card.passed, card.text()
        assert not card.gaps and all(c.passed or c.evidence.get("skipped")
                                     for c in card.checks), card.text()
        return
    assert not card.passed, card.text()
    for name, (verdict, words, *cause) in case.expect.items():
        assert name in rows, f"no check {name!r}:\n{card.text()}"
        row = rows[name]
        assert row.passed is verdict, card.text()
        for w in (words,) if isinstance(words, str) else words:
            assert w in row.happened, row.happened
        if cause:
            assert row.cause == cause[0], (row.cause, row.happened)


@pytest.mark.parametrize("name", list(BROKEN))
def test_a_broken_implementation_fails_for_its_cause(name, broker, tmp_path):
    judge(graded(BROKEN[name], broker, tmp_path), BROKEN[name])


@pytest.mark.parametrize("case", list(CAUGHT_BY_OUTCOMES.values()),
                         ids=list(CAUGHT_BY_OUTCOMES))
def test_a_broken_implementation_caught_by_outcome_checks(case, broker, tmp_path):
    judge(graded(case, broker, tmp_path), case)


@pytest.mark.parametrize("name", list(CORRECT))
def test_a_correct_but_different_implementation_passes(name, broker, tmp_path):
    judge(graded(CORRECT[name], broker, tmp_path), CORRECT[name])


def test_an_inventory_without_http_is_a_gap_and_the_rest_is_judged(broker, tmp_path):
    card = grade(VARIANTS / "no_http_inventory.toml", broker, small=True, progress=False,
                 out=tmp_path, only=["baseline"])
    assert [g["what"] for g in card.gaps] == ["HTTP on the inventory service"], card.text()
    rows = {c.name: c for c in card.checks}
    assert rows["nothing lost"].passed is True and rows["services stay up"].passed is True
    # Without /inventory and /reservations the stock invariants are not judged: left off the
    # card, or there marked not judged, never passed on nothing.
    stock = rows.get("stock conserved")
    assert stock is None or stock.evidence.get("not_judged") is True, card.text()
    assert not card.passed


def test_the_original_lab_gets_real_failures_with_its_gaps_first(broker, tmp_path):
    # pika + Flask, ports 5001-5003, RABBITMQ_HOST: no GET /reservations, no DLQ, no
    # confirms, consumers that never reconnect, a poison requeued for ever, an in-memory
    # processed set. Its three real defects are FAIL verdicts with their causes.
    card = grade(ROOT / "tests/impls/original_lab/impl.toml", broker, small=True,
                 progress=False, out=tmp_path,
                 only=["baseline", "reconnect", "restart-idempotency", "malformed"])
    assert {g["what"] for g in card.gaps} == {"GET /reservations (inventory)", "queue 'dlq'"}
    rows = {(c.scenario, c.name): c for c in card.checks}
    # With no fault nothing is lost: its consumers wait idle through the namespace's forward
    # until the first order (a forward that cut idle connections failed this falsely).
    assert rows["baseline", "nothing lost"].passed is True, rows["baseline", "nothing lost"]
    # Its consumers never reconnect, while /health says 200: seen on the broker.
    back = rows["reconnect", "services reconnect by themselves"]
    assert back.passed is False and back.cause == "consumer_gone", back.happened
    assert "nothing consumes order_placed" in back.happened
    assert rows["reconnect", "no double reservation"].evidence["not_judged"] is True
    assert rows["reconnect", "no duplicate notification"].passed is True  # judged past gaps
    lost = rows["reconnect", "nothing lost"]
    assert lost.passed is False and "restart came first" in lost.happened, lost.happened
    # No ledger and no DLQ to read: the evidence says so, it never claims them empty.
    assert "no ledger row" not in lost.happened and "could be read" in lost.happened
    # Duplicates after a restart: seen on the wire, without a ledger.
    twice = rows["restart-idempotency", "one outcome per order"]
    assert twice.passed is False and twice.cause == "record_lost_in_restart", twice.happened
    assert "did not survive the restart" in twice.happened
    # The poison loop: a malformed message requeued for ever, never dead-lettered.
    loop = rows["malformed", "no poison loop"]
    assert loop.passed is False and loop.cause == "requeue_forever", loop.happened
    assert "poison loop: order_placed" in loop.happened and "never dead-lettered" in loop.happened
    md = (card.run_dir / "report.md").read_text()
    assert md.index("Fix this first") < md.index("What to fix") < md.index("Every check")


def test_a_start_up_failure_is_blamed_on_the_service_whose_declaration_caused_it(
        broker, tmp_path):
    # Its queue arguments get a channel closed (PRECONDITION_FAILED): whichever side
    # declared first, the card names the inventory, not the lab's order service's health.
    card = grade(VARIANTS / "other_queue_args.toml", broker, small=True, progress=False,
                 out=tmp_path, only=["baseline", "duplicates"])
    first = card.checks[0]
    assert first.passed is None and first.evidence["service"] == "inventory", card.text()
    assert "PRECONDITION_FAILED" in first.happened, first.happened
    assert card.scenarios[1].checks[0].evidence.get("skipped") is True


def test_a_definitions_file_is_loaded_before_the_services_start(broker, tmp_path):
    from harness import amqp
    from harness.lab import Lab
    (tmp_path / "definitions.json").write_text(json.dumps({"queues": [
        {"name": "from_definitions", "vhost": "/", "durable": True, "auto_delete": False,
         "arguments": {}}]}))
    spec = tmp_path / "impl.toml"
    spec.write_text((ROOT / "solutions/inventory/impl.toml").read_text().replace(
        '["{python}", "inventory.py"]', f'["{{python}}", "{ROOT}/solutions/inventory/'
        'inventory.py"]') + '\n[broker]\ndefinitions = "definitions.json"\n')
    with Lab(broker, impl=spec, workdir=tmp_path / "lab") as lab:
        # Loaded into the lab's own vhost (the file's "vhost" is the one it is loaded into).
        assert amqp.depth(lab.amqp_url, "from_definitions") == 0
