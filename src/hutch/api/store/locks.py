"""``PgSandboxLocks``: the per-sandbox lock across api processes, on PostgreSQL advisory locks.

Each held lock is a **session-level** advisory lock (``pg_advisory_lock(key)``) taken on a
connection of a small pool of its own (not the store's: a long pause must not starve
reads), in autocommit mode, so no transaction stays open while the node works. The lock
lives exactly as long as that session holds it:

* the body ends (returns, raises, or its task is cancelled): ``pg_advisory_unlock(key)``,
  shielded from a second cancellation, then the connection goes back to the pool;
* a failure or a cancellation *while the connection is talking* (waiting for the lock, or
  unlocking): the connection is **invalidated** (closed, not pooled), and PostgreSQL drops
  every lock of a session that ends. A connection is never pooled in an unknown state;
* the api process dies: its sessions end with it, so do their locks (a crash never leaves
  a sandbox locked).

Waiting is bounded: within the process, waiters queue on an :class:`asyncio.Lock` first
(one connection per sandbox in use, not one per waiter), and the database wait uses
``lock_timeout``, a server-side bound that cannot race a client-side cancel. Past the
wait, :func:`~hutch.api.service.locks.sandbox_busy` (503, retryable).

The key is the first 8 bytes of SHA-256 of ``"hutch.sandbox:" + id`` (signed, as
``bigint``): a collision only serialises two sandboxes, it never lets two holders in.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Final

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from hutch.api.service.locks import DEFAULT_LOCK_WAIT_S, SandboxLocks, sandbox_busy

_log = logging.getLogger(__name__)

#: PostgreSQL's SQLSTATE for "lock_timeout expired" (lock_not_available).
_LOCK_NOT_AVAILABLE: Final = "55P03"
_LOCK: Final = text("SELECT pg_advisory_lock(:key)")
_UNLOCK: Final = text("SELECT pg_advisory_unlock(:key)")


def advisory_key(namespace: str, name: str) -> int:
    """A stable signed 64-bit advisory lock key for ``name`` in ``namespace``."""
    digest = hashlib.sha256(f"{namespace}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lock_engine(engine: AsyncEngine, *, pool_size: int) -> AsyncEngine:
    """A second engine on ``engine``'s database for sessions that hold locks: autocommit,
    pre-pinged, its own pool (so locks and queries never wait for each other's slots)."""
    return create_async_engine(
        engine.url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        isolation_level="AUTOCOMMIT",
    )


def _sqlstate(exc: DBAPIError) -> str | None:
    orig = exc.orig
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


class PgSandboxLocks:
    """:class:`~hutch.api.service.locks.SandboxLockFamily` on PostgreSQL advisory locks."""

    def __init__(
        self, engine: AsyncEngine, *, wait_s: float = DEFAULT_LOCK_WAIT_S, pool_size: int = 10
    ) -> None:
        self._engine = lock_engine(engine, pool_size=pool_size)
        self._local = SandboxLocks()
        self.wait_s = wait_s

    @contextlib.asynccontextmanager
    async def hold(self, sandbox_id: str) -> AsyncIterator[None]:
        """Hold ``sandbox_id``'s lock in every api process for the body of the block."""
        deadline = time.monotonic() + self.wait_s
        async with self._local.hold_within(sandbox_id, self.wait_s):
            left = max(deadline - time.monotonic(), 0.001)
            key = advisory_key("hutch.sandbox", sandbox_id)
            conn = await self._locked_connection(sandbox_id, key, left)
            try:
                yield
            finally:  # the body's errors and cancellation included
                await _release(conn, key)

    async def _locked_connection(self, sandbox_id: str, key: int, wait_s: float) -> AsyncConnection:
        try:
            async with asyncio.timeout(wait_s):  # the pool's own wait (all slots taken)
                conn = await self._engine.connect()
        except (TimeoutError, PoolTimeoutError):
            raise sandbox_busy(sandbox_id, self.wait_s) from None
        try:
            ms = max(int(wait_s * 1000), 1)
            await conn.execute(text(f"SET lock_timeout = {ms}"))
            await conn.execute(_LOCK, {"key": key})
        except DBAPIError as exc:
            await _discard(conn)
            if _sqlstate(exc) == _LOCK_NOT_AVAILABLE:
                raise sandbox_busy(sandbox_id, self.wait_s) from None
            raise
        except BaseException:  # cancelled mid-wait: the session may hold the lock by now
            await _discard(conn)
            raise
        return conn

    async def aclose(self) -> None:
        """Close the lock sessions (any still held end, and their locks with them)."""
        await self._engine.dispose()


async def _release(conn: AsyncConnection, key: int) -> None:
    async def unlock() -> None:
        try:
            await conn.execute(_UNLOCK, {"key": key})
        except BaseException as exc:
            # The session is gone (or in doubt): ending it is what frees the lock, and the
            # body's outcome stands. Said in the log: the section may not have been alone.
            _log.warning("sandbox lock: unlocking failed (%r); the session is closed", exc)
            await _discard(conn)
            return
        await conn.close()

    # Shielded: a second cancellation must not leave the session (and the lock) pooled.
    await asyncio.shield(unlock())


async def _discard(conn: AsyncConnection) -> None:
    """End the session without returning it to the pool: PostgreSQL drops its locks."""

    async def close() -> None:
        with contextlib.suppress(Exception):
            await conn.invalidate()
        with contextlib.suppress(Exception):
            await conn.close()

    await asyncio.shield(close())
