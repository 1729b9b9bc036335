"""Group commit's logic (lab_services.order_group), with threads and no broker."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness.waiting import wait_until
from lab_services.order_group import GroupCommit


class Gate:
    """A group handler whose first call waits until released, so that others queue behind."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, items: list[int]) -> list[int | BaseException]:
        self.calls.append(list(items))
        if len(self.calls) == 1:
            self.entered.set()
            assert self.release.wait(30)
        return [ValueError(f"odd {i}") if i % 7 == 0 else i * 10 for i in items]


def test_one_caller_leads_a_group_of_one():
    group = GroupCommit(lambda items: [i + 1 for i in items])
    assert [group.submit(i) for i in range(3)] == [1, 2, 3]
    assert group.groups == 3 and group.items == 3 and group.waiting() == 0


def test_callers_arriving_during_a_group_are_handled_together_each_with_its_own_result():
    gate = Gate()
    group = GroupCommit(gate)
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(group.submit, 1)
        assert gate.entered.wait(30)
        rest = {i: pool.submit(group.submit, i) for i in (2, 3, 4, 5, 6)}
        wait_until(lambda: group.waiting() == 6, 30, "five callers queued behind the leader")
        gate.release.set()
        assert first.result(30) == 10
        assert {i: f.result(30) for i, f in rest.items()} == {i: i * 10 for i in rest}
    assert gate.calls[0] == [1] and sorted(gate.calls[1]) == [2, 3, 4, 5, 6]
    assert group.groups == 2 and group.items == 6


def test_an_items_error_is_raised_in_its_caller_alone():
    gate = Gate()
    gate.release.set()
    group = GroupCommit(gate)
    with pytest.raises(ValueError, match="odd 7"):
        group.submit(7)
    assert group.submit(8) == 80


def test_a_failing_group_fails_every_caller_of_that_group_and_not_the_next():
    gate = Gate()
    broken = threading.Event()

    def handle(items: list[int]) -> list[int]:
        gate(items)
        if broken.is_set():
            raise OSError("disk full")
        return [i for i in items]

    group = GroupCommit(handle)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(group.submit, 1)
        assert gate.entered.wait(30)
        broken.set()
        rest = [pool.submit(group.submit, i) for i in (2, 3)]
        wait_until(lambda: group.waiting() == 3, 30, "two callers queued")
        gate.release.set()
        with pytest.raises(OSError):
            first.result(30)
        for f in rest:
            with pytest.raises(OSError):
                f.result(30)
    broken.clear()
    assert group.submit(4) == 4 and group.waiting() == 0


def test_a_group_holds_at_most_max_group_items():
    gate = Gate()
    group = GroupCommit(gate, max_group=2)
    with ThreadPoolExecutor(6) as pool:
        first = pool.submit(group.submit, 1)
        assert gate.entered.wait(30)
        rest = [pool.submit(group.submit, i) for i in (2, 3, 4, 5)]
        wait_until(lambda: group.waiting() == 5, 30, "four callers queued")
        gate.release.set()
        assert [f.result(30) for f in [first, *rest]] == [10, 20, 30, 40, 50]
    assert [len(c) for c in gate.calls] == [1, 2, 2]


def test_a_handler_answering_too_few_results_fails_the_group():
    group = GroupCommit(lambda items: [])
    with pytest.raises(RuntimeError, match="answered 0 of 1"):
        group.submit(1)
