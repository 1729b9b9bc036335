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


def test_the_compose_file_uses_the_contracts_services_and_ports():
    """docker-compose.yml cannot import lab_services.contract: it is held to it here."""
    import yaml

    from lab_services.contract import DEFAULT_PORTS, SERVICES
    compose = yaml.safe_load((contract.CONTRACT.parents[1] / "docker-compose.yml").read_text())
    services = compose["services"]
    for name in SERVICES:
        env = services[f"{name}_service"]["environment"]
        assert int(env["PORT"]) == DEFAULT_PORTS[name], name
        assert f"lab_services.{name}" in " ".join(services[f"{name}_service"]["command"])


def test_every_queue_has_its_consumer_or_is_the_dlq():
    """A new queue is owned by a service (retry tiers by their work queue's), or it is read
    only, like the DLQ: nothing is silently left out of stalled-queue checks or the sampler."""
    from harness.observe import LAB_QUEUES
    from lab_services.contract import SERVICES
    t = topo.build_topology("classic")
    for q in t.queues:
        assert q.owner in SERVICES or q.name == topo.DLQ, q.name
    assert set(LAB_QUEUES) == set(t.queue_names())
    assert topo.owner_of(topo.retry_queue(2, topo.QUEUE_INVENTORY_FAILED)) == "notification"
