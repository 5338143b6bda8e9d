"""Singletons of the control plane, run by exactly one api: the elected leader.

Some loops must run once per cluster, not once per api process: the timeout reaper, the
usage sampler (two would double every team's samples), and ``membership``'s lost-node
sweeper. Each registers with :meth:`Leadership.run_while_leader`; the leadership starts
it when this process becomes the leader and cancels it when it stops being one.

Two electors (ADR 0024):

* :class:`AlwaysLeader` (here): SQLite, where there is one api by definition
  (docs/store.md), so it leads from the start;
* ``hutch.api.store.leader.PgLeaderElector``: a session-level PostgreSQL advisory lock
  held by one api's dedicated connection; when that session ends (the process dies, its
  connection drops), PostgreSQL frees the lock and another api takes it on its next try.

Leadership is a performance guarantee, not a safety one: a leader that lost its session
keeps running its singletons until its next check (``interval_s``), so singletons must
stay safe when two run for a moment. The reaper is: every kill is a compare-and-set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

_log = logging.getLogger(__name__)

#: A singleton's body: a coroutine that runs until cancelled.
SingletonFactory = Callable[[], Coroutine[Any, Any, None]]


class Leadership(Protocol):
    """What the app and other parts need of the elector."""

    @property
    def is_leader(self) -> bool: ...

    def run_while_leader(self, name: str, factory: SingletonFactory) -> None:
        """Run ``factory()`` whenever this process leads (again after each re-election)."""
        ...

    async def run(self) -> None:
        """Campaign (and keep the singletons' tasks in step) until cancelled."""
        ...


class Singletons:
    """The registered singletons and their tasks: started on gain, cancelled on loss."""

    def __init__(self) -> None:
        self._factories: dict[str, SingletonFactory] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.leading = False

    def register(self, name: str, factory: SingletonFactory) -> None:
        if name in self._factories:
            raise ValueError(f"singleton {name!r} is registered already")
        self._factories[name] = factory
        if self.leading:
            self._start(name)

    def gained(self) -> None:
        self.leading = True
        for name in self._factories:
            self._start(name)

    async def lost(self) -> None:
        self.leading = False
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _start(self, name: str) -> None:
        running = self._tasks.get(name)
        if running is not None and not running.done():
            return
        self._tasks[name] = asyncio.create_task(self._factories[name](), name=f"hutch-{name}")

    def running(self) -> list[str]:
        """Names of the singletons running now (for tests and diagnostics)."""
        return sorted(n for n, t in self._tasks.items() if not t.done())


class AlwaysLeader:
    """The elector of a one-api store (SQLite): leads from :meth:`run` on."""

    def __init__(self) -> None:
        self._singletons = Singletons()

    @property
    def is_leader(self) -> bool:
        return self._singletons.leading

    def run_while_leader(self, name: str, factory: SingletonFactory) -> None:
        self._singletons.register(name, factory)

    def running(self) -> list[str]:
        return self._singletons.running()

    async def run(self) -> None:
        self._singletons.gained()
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.shield(self._singletons.lost())
