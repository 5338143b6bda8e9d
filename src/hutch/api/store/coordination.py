"""The coordination an api gets from its store: the sandbox locks and the leader elector.

PostgreSQL: advisory locks across every api process on the database (``locks.py``,
``leader.py``). SQLite: the in-process lock family and an elector that always leads,
because SQLite means one api process (docs/store.md, ADR 0024).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from hutch.api.service.leader import AlwaysLeader, Leadership
from hutch.api.service.locks import DEFAULT_LOCK_WAIT_S, SandboxLockFamily, SandboxLocks
from hutch.api.store.engine import is_sqlite
from hutch.api.store.leader import PgLeaderElector
from hutch.api.store.locks import PgSandboxLocks


@dataclass(frozen=True, slots=True)
class Coordination:
    """The lock family and the elector; :meth:`aclose` ends their sessions."""

    locks: SandboxLockFamily
    leader: Leadership

    async def aclose(self) -> None:
        for part in (self.locks, self.leader):
            close = getattr(part, "aclose", None)
            if close is not None:
                await close()


def open_coordination(
    engine: AsyncEngine,
    *,
    lock_wait_s: float = DEFAULT_LOCK_WAIT_S,
    leader_interval_s: float = 2.0,
) -> Coordination:
    """The store's coordination (no connection is made until first use)."""
    if is_sqlite(engine):
        return Coordination(locks=SandboxLocks(wait_s=lock_wait_s), leader=AlwaysLeader())
    return Coordination(
        locks=PgSandboxLocks(engine, wait_s=lock_wait_s),
        leader=PgLeaderElector(engine, interval_s=leader_interval_s),
    )
