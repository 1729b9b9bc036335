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
    __slots__ = ("item", "done", "result", "error", "wake")

    def __init__(self, item: Item) -> None:
        self.item = item
        self.done = False
        self.result: Result | None = None
        self.error: BaseException | None = None
        # Held until the caller is woken: answered, or first in line and to lead.
        self.wake = threading.Lock()
        self.wake.acquire()


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
        self._mutex = threading.Lock()
        self._queue: deque[_Waiter[Item, Result]] = deque()
        self.groups = 0  # how many groups were handled
        self.items = 0  # how many items they held

    def submit(self, item: Item) -> Result:
        """Have `item` handled with whatever else is waiting; return its result or raise."""
        me: _Waiter[Item, Result] = _Waiter(item)
        with self._mutex:
            self._queue.append(me)
            first = len(self._queue) == 1
        if not first:
            # Woken once: by the leader that answered this item, or, first in line now, to
            # lead. Each caller is woken alone (a lock each, not one shared condition's
            # notify_all), so the callers queued for the next group are not woken for
            # nothing.
            me.wake.acquire()
        if not me.done:
            with self._mutex:
                group = [self._queue[i] for i in range(min(len(self._queue), self.max_group))]
            self._lead(group)
        if me.error is not None:
            raise me.error
        return me.result  # type: ignore[return-value]

    def waiting(self) -> int:
        """Items submitted and not answered yet (a leader's group included)."""
        with self._mutex:
            return len(self._queue)

    def _lead(self, group: list[_Waiter[Item, Result]]) -> None:
        try:
            results: Sequence[Result | BaseException] = self.handle([w.item for w in group])
            if len(results) != len(group):
                raise RuntimeError(f"group handler answered {len(results)} of {len(group)}")
        except BaseException as exc:  # noqa: BLE001 - handed to every caller of the group
            results = [exc] * len(group)
        for waiter, result in zip(group, results, strict=True):
            if isinstance(result, BaseException):
                waiter.error = result
            else:
                waiter.result = result
            waiter.done = True
        with self._mutex:
            for _ in group:
                self._queue.popleft()
            self.groups += 1
            self.items += len(group)
            leader = self._queue[0] if self._queue else None
        for waiter in group[1:]:  # the leader, group[0], is this thread: awake already
            waiter.wake.release()
        if leader is not None:
            leader.wake.release()
