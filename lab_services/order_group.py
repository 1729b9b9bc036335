"""Group commit: concurrent callers' items handled together, by one of them, in one go.

Each `POST /order` must commit its order durably (an fsync) and have its event confirmed.
Done one request at a time, four clients get little more than one: they queue for the
store's single writer, one fsync each. Here a request hands its item over and the first
caller in line (the leader) takes every item waiting, runs `handle` once for all of them
(one transaction, one fsync, their publishes handed to the broker together), and gives
each caller its own result. Callers that arrive while a group is being handled form the
next group. With one client, every caller leads a group of one: no thread hand-off, no
added wait. This is the leader/follower write queue of LevelDB's `DBImpl::Write`.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class _Waiter(Generic[Item, Result]):
    __slots__ = ("item", "done", "result", "error")

    def __init__(self, item: Item) -> None:
        self.item = item
        self.done = False
        self.result: Result | None = None
        self.error: BaseException | None = None


class GroupCommit(Generic[Item, Result]):
    """Runs `handle` on groups of concurrently submitted items; each caller gets its result.

    `handle(items)` returns one entry per item, in order: its result, or an exception
    (raised in that item's caller alone). If `handle` itself raises, every caller of the
    group gets that exception: nothing of the group was done.
    """

    def __init__(self, handle: Callable[[list[Item]], Sequence[Result | BaseException]], *,
                 max_group: int = 256) -> None:
        if max_group < 1:
            raise ValueError(f"max_group must be at least 1, not {max_group}")
        self.handle = handle
        self.max_group = max_group
        self._cond = threading.Condition()
        self._queue: deque[_Waiter[Item, Result]] = deque()
        self.groups = 0  # how many groups were handled
        self.items = 0  # how many items they held

    def submit(self, item: Item) -> Result:
        """Have `item` handled with whatever else is waiting; return its result or raise."""
        me: _Waiter[Item, Result] = _Waiter(item)
        with self._cond:
            self._queue.append(me)
            while not me.done and self._queue[0] is not me:
                self._cond.wait()
            if not me.done:  # first in line: lead a group of everything waiting
                group = [self._queue[i] for i in range(min(len(self._queue), self.max_group))]
        if not me.done:
            self._lead(group)
        if me.error is not None:
            raise me.error
        return me.result  # type: ignore[return-value]

    def waiting(self) -> int:
        """Items submitted and not answered yet (a leader's group included)."""
        with self._cond:
            return len(self._queue)

    def _lead(self, group: list[_Waiter[Item, Result]]) -> None:
        try:
            results: Sequence[Result | BaseException] = self.handle([w.item for w in group])
            if len(results) != len(group):
                raise RuntimeError(f"group handler answered {len(results)} of {len(group)}")
        except BaseException as exc:  # noqa: BLE001 - handed to every caller of the group
            results = [exc] * len(group)
        with self._cond:
            for waiter, result in zip(group, results, strict=True):
                self._queue.popleft()
                if isinstance(result, BaseException):
                    waiter.error = result
                else:
                    waiter.result = result
                waiter.done = True
            self.groups += 1
            self.items += len(group)
            self._cond.notify_all()
