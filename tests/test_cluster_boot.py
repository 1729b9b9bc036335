"""How a cluster boots its nodes together: a node that loses RabbitMQ 3.10's feature-flag
race with a booting peer is booted again; any other failure stops the boot; and what
counts as a node's answer to "running?" (fake nodes: the bookkeeping only;
tests/test_cluster.py restarts and partitions a real cluster)."""

from __future__ import annotations

import subprocess

import pytest

from harness.brokers.base import BrokerError
from harness.brokers.cluster import PEER_RACE_SIGNATURE, LocalCluster, boot_together


class FakeNode:
    """A node whose boots fail with the given messages, in turn, then succeed."""

    def __init__(self, node: str, failures: list[str] | None = None) -> None:
        self.node = node
        self.failures = list(failures or [])
        self.launches = 0
        self.starts = 0
        self.up = False

    def launch(self) -> None:
        self.launches += 1

    def start(self) -> None:
        self.starts += 1
        if self.failures:
            raise BrokerError(f"node {self.node} exited while starting\n{self.failures.pop(0)}")
        self.up = True


RACE = f"exception exit: {{{{{PEER_RACE_SIGNATURE}, {{badrpc, ...}}}}}}"


def test_every_node_is_launched_before_any_is_waited_for_and_all_come_up():
    nodes = [FakeNode(f"n{i}") for i in range(3)]
    boot_together(nodes)
    assert [(n.launches, n.starts, n.up) for n in nodes] == [(1, 1, True)] * 3


def test_a_node_that_lost_the_feature_flag_race_is_booted_again():
    nodes = [FakeNode("n1"), FakeNode("n2"), FakeNode("n3", failures=[RACE])]
    boot_together(nodes)
    assert all(n.up for n in nodes)
    assert nodes[2].starts == 2


def test_the_race_lost_more_often_than_the_retries_allow_fails_the_boot():
    nodes = [FakeNode("n1"), FakeNode("n2", failures=[RACE] * 3)]
    with pytest.raises(BrokerError, match=PEER_RACE_SIGNATURE):
        boot_together(nodes, retries=2)
    assert nodes[1].starts == 3


def test_any_other_boot_failure_is_not_retried():
    nodes = [FakeNode("n1", failures=["eaddrinuse"]), FakeNode("n2")]
    with pytest.raises(BrokerError, match="eaddrinuse"):
        boot_together(nodes)
    assert nodes[0].starts == 1


class AnsweringNode:
    """A node whose CLI prints `stdout` with exit code `code`, or times out."""

    def __init__(self, stdout: str = "", code: int = 0, hangs: bool = False) -> None:
        self.stdout, self.code, self.hangs = stdout, code, hangs

    def rabbitmqctl(self, *args: str, timeout: float = 60,
                    check: bool = True) -> subprocess.CompletedProcess[str]:
        if self.hangs:
            raise subprocess.TimeoutExpired(["rabbitmqctl", *args], timeout)
        return subprocess.CompletedProcess(["rabbitmqctl", *args], self.code, self.stdout, "")


@pytest.mark.parametrize(("node", "expected"), [
    (AnsweringNode("true\n"), True),
    (AnsweringNode("false\n"), False),  # the VM answers, the app is stopped: paused
    (AnsweringNode("Error: unable to perform an operation on node", code=69), None),
    (AnsweringNode("{badrpc,nodedown}"), None),
    (AnsweringNode("false", code=2), None),  # a failed command is no answer, whatever it printed
    (AnsweringNode(hangs=True), None),
])
def test_only_a_clear_answer_counts_as_running_or_paused(node, expected):
    # partition() waits on these: only an unambiguous "false" from a live VM is a pause.
    assert LocalCluster.app_running(node) is expected
