"""Team usage samples (issue 11): written by the elected leader's sampler, read by every api.

One row per (team, sample time) in ``team_usage_samples``. :meth:`SqlUsageSampleStore.record`
inserts one sample of every team and deletes the rows older than the retention in the same
transaction, so the table holds at most the retention's worth (24 h) whichever api leads.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from hutch.api.models import TeamSample
from hutch.api.store.base import Clock, utc_now
from hutch.api.store.engine import read_transaction, write_transaction
from hutch.api.store.tables import team_usage_samples
from hutch.shared.ids import TeamID

_t = team_usage_samples.c

#: The peak metrics (E2B's names) and their columns.
_METRIC_COLUMNS = {"concurrent_sandboxes": _t.concurrent, "sandbox_start_rate": _t.start_rate}


class SqlUsageSampleStore:
    """The ``team_usage_samples`` table."""

    def __init__(self, engine: AsyncEngine, *, clock: Clock = utc_now) -> None:
        self._engine = engine
        self._clock = clock

    async def record(
        self, at: datetime, samples: Mapping[TeamID, tuple[int, float]], *, prune_before: datetime
    ) -> int:
        """Insert the sample ``at`` of each team (``team → (concurrent, start_rate)``) and
        delete every row older than ``prune_before``; returns how many were deleted."""
        async with write_transaction(self._engine) as conn:
            if samples:
                await conn.execute(
                    team_usage_samples.insert(),
                    [
                        {"team_id": team, "at": at, "concurrent": c, "start_rate": rate}
                        for team, (c, rate) in samples.items()
                    ],
                )
            pruned = await conn.execute(team_usage_samples.delete().where(_t.at < prune_before))
            return int(pruned.rowcount or 0)

    async def series(self, team_id: TeamID, *, start: datetime, end: datetime) -> list[TeamSample]:
        """The team's samples in ``[start, end]``, oldest first."""
        query = (
            select(_t.at, _t.concurrent, _t.start_rate)
            .where(_t.team_id == team_id, _t.at >= start, _t.at <= end)
            .order_by(_t.at)
        )
        async with read_transaction(self._engine) as conn:
            rows = (await conn.execute(query)).all()
        return [TeamSample(at=r[0], concurrent=int(r[1]), start_rate=float(r[2])) for r in rows]

    async def peak(
        self, team_id: TeamID, metric: str, *, start: datetime, end: datetime
    ) -> TeamSample | None:
        """The team's sample in ``[start, end]`` with the highest ``metric``
        (``concurrent_sandboxes`` or ``sandbox_start_rate``), the first of equal ones;
        ``None`` when the window holds none."""
        column = _METRIC_COLUMNS[metric]
        query = (
            select(_t.at, _t.concurrent, _t.start_rate)
            .where(_t.team_id == team_id, _t.at >= start, _t.at <= end)
            .order_by(column.desc(), _t.at)
            .limit(1)
        )
        async with read_transaction(self._engine) as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return TeamSample(at=row[0], concurrent=int(row[1]), start_rate=float(row[2]))

    async def last_active(self) -> dict[TeamID, datetime]:
        """Per team with a non-zero sample kept: the time of its latest one."""
        query = (
            select(_t.team_id, func.max(_t.at))
            .where(or_(_t.concurrent > 0, _t.start_rate > 0))
            .group_by(_t.team_id)
        )
        async with read_transaction(self._engine) as conn:
            rows = (await conn.execute(query)).all()
        return {TeamID(r[0]): r[1] for r in rows}
