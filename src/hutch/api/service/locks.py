"""``SandboxLocks``: one asyncio lock per sandbox id, for operations that span store and node.

A metadata patch, a pause, a resume, a snapshot and a fork each write the store *and* the
node; holding the sandbox's lock from the first step to the last serialises them end to
end, so that no two of them interleave their steps (ADR 0005). The locks live in this
process: ``hutch serve`` runs one api. With several api processes in front of one store
this would have to become a database lock (see ADR 0005, consequences).

Locks are created on first use and dropped when nobody holds or waits for them, so the
map does not grow with every sandbox ever seen.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class SandboxLocks:
    """A keyed family of :class:`asyncio.Lock`; use :meth:`hold` as a context manager."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, sandbox_id: str) -> AsyncIterator[None]:
        """Hold ``sandbox_id``'s lock for the body of the ``async with``."""
        lock, users = self._locks.get(sandbox_id, (asyncio.Lock(), 0))
        self._locks[sandbox_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[sandbox_id]
            if users <= 1:
                del self._locks[sandbox_id]
            else:
                self._locks[sandbox_id] = (lock, users - 1)

    def held(self, sandbox_id: str) -> bool:
        """Whether someone holds (or waits for) the lock: for tests and diagnostics."""
        return sandbox_id in self._locks
