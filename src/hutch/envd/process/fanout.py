"""Output fan-out: every attached stream gets every chunk, in order, with bounded memory.

One ``OutputFanout`` per process. Each attached stream (the ``Start`` call, any number of
``Connect`` calls) holds a ``Subscription``: a queue of at most ``capacity`` chunks. When a
queue is full the fan-out reports itself *congested* and the process handle stops reading
the process's pipes until every queue has room again (``on_room``). The kernel's pipe
buffer then fills and the process blocks in ``write`` -- the same back-pressure a slow
terminal exerts, and what E2B's envd does with its unbuffered channels. Nothing is dropped
or reordered within a stream, and memory per subscriber is bounded by ``capacity`` chunks
(plus the chunks of a final drain, see ``handle.py``).

Output published while nobody is subscribed is dropped, not buffered for later: E2B's
documented re-attach semantics (``Connect`` does not replay).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from hutch.envd.process.models import Output, ProcessEnd

#: Default queue length per subscriber, in chunks (a chunk is at most one read: 64 KiB).
DEFAULT_CAPACITY = 64


class Subscription:
    """One stream's view of a process's output: chunks in order, then the end."""

    def __init__(self, fanout: OutputFanout, capacity: int) -> None:
        self._fanout = fanout
        self._capacity = capacity
        self._items: deque[Output] = deque()
        self._end: ProcessEnd | None = None
        self._wakeup = asyncio.Event()
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether ``close`` was called (``next`` then returns None at once)."""
        return self._closed

    @property
    def full(self) -> bool:
        """Whether this subscriber's queue is at capacity."""
        return len(self._items) >= self._capacity

    def _push(self, item: Output) -> None:
        self._items.append(item)
        self._wakeup.set()

    def _finish(self, end: ProcessEnd) -> None:
        self._end = end
        self._wakeup.set()

    async def next(self, *, timeout: float | None = None) -> Output | ProcessEnd | None:
        """The next chunk, or the end once every chunk was taken; None if ``timeout`` passed.

        Cancel-safe: a cancelled wait takes nothing from the queue. Returns None at once
        (and wakes a waiting ``next``) once the subscription is closed.
        """
        while True:
            if self._closed:
                return None
            if self._items:
                was_full = self.full
                item = self._items.popleft()
                if was_full:
                    self._fanout._room()
                return item
            if self._end is not None:
                return self._end
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout)
            except TimeoutError:
                return None

    def close(self) -> None:
        """Detach: the process no longer waits for this stream; a pending ``next`` returns."""
        self._closed = True
        self._items.clear()
        self._wakeup.set()
        self._fanout._unsubscribe(self)


class OutputFanout:
    """Delivers a process's output to every current subscriber (see the module docstring)."""

    def __init__(self, *, on_room: Callable[[], None], capacity: int = DEFAULT_CAPACITY) -> None:
        self._on_room = on_room
        self._capacity = max(1, capacity)
        self._subscribers: list[Subscription] = []
        self._end: ProcessEnd | None = None

    @property
    def congested(self) -> bool:
        """Whether some subscriber's queue is full (the producer should pause)."""
        return any(s.full for s in self._subscribers)

    @property
    def subscriber_count(self) -> int:
        """How many streams are attached."""
        return len(self._subscribers)

    def subscribe(self) -> Subscription:
        """A new subscription; it sees output published from now on, then the end."""
        sub = Subscription(self, self._capacity)
        if self._end is not None:
            sub._finish(self._end)
        else:
            self._subscribers.append(sub)
        return sub

    def publish(self, item: Output) -> None:
        """Queue ``item`` for every subscriber (dropped when there is none)."""
        for sub in self._subscribers:
            sub._push(item)

    def finish(self, end: ProcessEnd) -> None:
        """Mark the output complete: subscribers get ``end`` after their queued chunks."""
        self._end = end
        subscribers, self._subscribers = self._subscribers, []
        for sub in subscribers:
            sub._finish(end)

    def _unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subscribers:
            self._subscribers.remove(sub)
            self._room()

    def _room(self) -> None:
        if not self.congested:
            self._on_room()
