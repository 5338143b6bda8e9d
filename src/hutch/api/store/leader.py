"""``PgLeaderElector``: leader election on a PostgreSQL session-level advisory lock.

One dedicated connection (autocommit, its own one-slot pool) campaigns every
``interval_s`` with ``pg_try_advisory_lock(key)``; the api whose session holds it leads.
While leading, the same connection is pinged every ``interval_s``: a ping that fails
(PostgreSQL restarted, the backend was terminated, the network dropped) means the session
and its lock are gone, so the singletons are cancelled at once and the campaign starts
again on a fresh connection. Another api's next try then wins: a takeover within about
one ``interval_s`` after the old leader's session ended (ADR 0024).

No clock, no lease row, no heartbeat table: the lock is exactly as alive as the session,
and PostgreSQL ends the session of a dead process (TCP keepalive for a silent peer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from hutch.api.service.leader import SingletonFactory, Singletons
from hutch.api.store.locks import advisory_key, lock_engine

_log = logging.getLogger(__name__)

#: Leadership of the whole control plane (one key; ``advisory_key`` namespaces it).
LEADER_KEY: Final = advisory_key("hutch.leader", "control-plane")
_TRY: Final = text("SELECT pg_try_advisory_lock(:key)")
_PING: Final = text("SELECT 1")


class PgLeaderElector:
    """:class:`~hutch.api.service.leader.Leadership` on a PostgreSQL advisory lock."""

    def __init__(
        self, engine: AsyncEngine, *, interval_s: float = 2.0, key: int = LEADER_KEY
    ) -> None:
        self._engine = lock_engine(engine, pool_size=1)
        self._interval_s = interval_s
        self._key = key
        self._singletons = Singletons()
        self._conn: AsyncConnection | None = None
        #: Set whenever leadership is gained (tests and callers may wait on it).
        self.became_leader = asyncio.Event()
        #: Rounds of :meth:`step` done (for tests and diagnostics).
        self.rounds = 0

    @property
    def is_leader(self) -> bool:
        return self._singletons.leading

    def run_while_leader(self, name: str, factory: SingletonFactory) -> None:
        self._singletons.register(name, factory)

    def running(self) -> list[str]:
        return self._singletons.running()

    async def run(self) -> None:
        try:
            while True:
                await self.step()
                await asyncio.sleep(self._interval_s)
        finally:
            await asyncio.shield(self._resign())

    async def step(self) -> None:
        """One campaign (or, while leading, one liveness check) round; not to be run
        concurrently with itself (:meth:`run` calls it, or a test does)."""
        self.rounds += 1
        try:
            if self._conn is None:
                self._conn = await self._engine.connect()
            if self.is_leader:
                await self._conn.execute(_PING)
                return
            got = (await self._conn.execute(_TRY, {"key": self._key})).scalar_one()
            if got:
                _log.info("this api is now the control plane's leader")
                self._singletons.gained()
                self.became_leader.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self.is_leader:
                _log.warning("leadership lost (the store session ended: %s)", exc)
            await self._resign()

    async def _resign(self) -> None:
        """Stop the singletons and end the session (which frees the lock if held)."""
        self.became_leader.clear()
        await self._singletons.lost()
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.invalidate()
            with contextlib.suppress(Exception):
                await conn.close()

    async def aclose(self) -> None:
        await self._resign()
        await self._engine.dispose()
