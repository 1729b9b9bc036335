"""docs/contract.md cannot drift from the topology and the scenario registry."""

from __future__ import annotations

from harness.grading import contract
from lab_services import topology as topo


def test_the_committed_contract_matches_the_code():
    assert not contract.stale(), "run: python -m harness contract --write"


def test_a_changed_topology_would_be_caught(tmp_path):
    page = tmp_path / "contract.md"
    text = contract.CONTRACT.read_text()
    page.write_text(text.replace(f"| `{topo.DLQ}` |", "| `dead_letter_queue` |", 1))
    assert contract.stale(page)
    contract.write(page)
    assert not contract.stale(page) and page.read_text() == text


def test_every_queue_and_exchange_is_on_the_page():
    text = contract.CONTRACT.read_text()
    t = topo.build_topology("classic")
    for name in [e.name for e in t.exchanges] + t.queue_names():
        assert f"`{name}`" in text
