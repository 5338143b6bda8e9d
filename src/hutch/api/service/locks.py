"""The per-sandbox lock: a port (:class:`SandboxLockFamily`) and its in-process implementation.

A metadata patch, a pause, a resume, a snapshot, a fork and a kill each write the store
*and* the node; holding the sandbox's lock from the first step to the last serialises them
end to end, so that no two of them interleave their steps (ADR 0005). Two implementations:

* :class:`SandboxLocks` (here): one :class:`asyncio.Lock` per sandbox id, in this process.
  It is what a SQLite store gets, and SQLite means **one api process** (docs/store.md);
* ``hutch.api.store.locks.PgSandboxLocks``: a PostgreSQL session-level advisory lock per
  sandbox, so that any number of api processes on one PostgreSQL serialise (ADR 0024).

Both bound the wait: a sandbox held longer than ``wait_s`` by someone else answers
:func:`sandbox_busy` (503, retryable) instead of queueing forever.

Locks are created on first use and dropped when nobody holds or waits for them, so the
map does not grow with every sandbox ever seen.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Final, Protocol

from hutch.shared.errors import UnavailableError

#: How long an operation waits for a sandbox another one holds (a pause may take seconds).
DEFAULT_LOCK_WAIT_S: Final = 60.0


class SandboxLockFamily(Protocol):
    """One mutual-exclusion lock per sandbox id."""

    def hold(self, sandbox_id: str) -> AbstractAsyncContextManager[None]:
        """Hold ``sandbox_id``'s lock for the body of the ``async with``; raises
        :func:`sandbox_busy`'s error when it cannot be had within the family's wait."""
        ...


def sandbox_busy(sandbox_id: str, wait_s: float) -> UnavailableError:
    """The answer when another operation holds the sandbox for longer than the wait."""
    return UnavailableError(
        f"sandbox {sandbox_id} is busy: another operation held it for more than {wait_s:g} s",
        public_message=f"Sandbox {sandbox_id} is busy with another operation "
        "(pause, resume, kill, snapshot or metadata update); retry shortly",
        error_code="sandbox_busy",
    )


class SandboxLocks:
    """A keyed family of :class:`asyncio.Lock`; use :meth:`hold` as a context manager."""

    def __init__(self, *, wait_s: float = DEFAULT_LOCK_WAIT_S) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self.wait_s = wait_s

    @contextlib.asynccontextmanager
    async def hold(self, sandbox_id: str) -> AsyncIterator[None]:
        """Hold ``sandbox_id``'s lock for the body of the ``async with``."""
        async with self.hold_within(sandbox_id, self.wait_s):
            yield

    @contextlib.asynccontextmanager
    async def hold_within(self, sandbox_id: str, wait_s: float) -> AsyncIterator[None]:
        """:meth:`hold` with its own bound on the wait (the PostgreSQL family queues its
        own waiters here first, so that only one per process takes a connection)."""
        lock, users = self._locks.get(sandbox_id, (asyncio.Lock(), 0))
        self._locks[sandbox_id] = (lock, users + 1)
        try:
            try:
                async with asyncio.timeout(wait_s):
                    await lock.acquire()
            except TimeoutError:
                raise sandbox_busy(sandbox_id, wait_s) from None
            try:
                yield
            finally:
                lock.release()
        finally:
            lock, users = self._locks[sandbox_id]
            if users <= 1:
                del self._locks[sandbox_id]
            else:
                self._locks[sandbox_id] = (lock, users - 1)

    def held(self, sandbox_id: str) -> bool:
        """Whether someone holds (or waits for) the lock: for tests and diagnostics."""
        return sandbox_id in self._locks
