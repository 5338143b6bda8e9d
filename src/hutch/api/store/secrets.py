"""Named secrets every api process shares: made once (by whoever asks first), then read.

``get_or_create(name, make)`` inserts ``make()`` unless a row exists, and returns the row's
value either way, so concurrent first callers in different processes agree (the loser of
the primary-key race reads the winner's value).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from hutch.api.store.base import Clock, utc_now
from hutch.api.store.engine import read_transaction, write_transaction
from hutch.api.store.tables import cluster_secrets


class SqlSecretStore:
    """The ``cluster_secrets`` table."""

    def __init__(self, engine: AsyncEngine, *, clock: Clock = utc_now) -> None:
        self._engine = engine
        self._clock = clock

    async def get_or_create(self, name: str, make: Callable[[], str]) -> str:
        """The secret ``name``, made with ``make()`` and kept if there is none yet."""
        found = await self._find(name)
        if found is not None:
            return found
        try:
            async with write_transaction(self._engine) as conn:
                await conn.execute(
                    cluster_secrets.insert().values(
                        name=name, value=make(), created_at=self._clock()
                    )
                )
        except IntegrityError:
            pass  # another api made it first: its value is the one
        found = await self._find(name)
        assert found is not None
        return found

    async def _find(self, name: str) -> str | None:
        async with read_transaction(self._engine) as conn:
            row = await conn.execute(
                select(cluster_secrets.c.value).where(cluster_secrets.c.name == name)
            )
            return row.scalar_one_or_none()
