"""SDK template builds as jobs (ADR 0024): the ``template_builds`` and
``template_build_logs`` tables.

A build is requested (``waiting``), started (``building``, its start request stored, no
worker yet), claimed by one api's worker (``worker`` and ``heartbeat_at`` set), and
finished (``ready`` or ``error``). :meth:`claim` takes the oldest unclaimed started build
with ``SELECT … FOR UPDATE SKIP LOCKED`` on PostgreSQL, so concurrent workers of several
apis never take the same one and never wait for each other; on SQLite the write
transaction's ``BEGIN IMMEDIATE`` serialises them. :meth:`fail_orphans` marks failed every
claimed build whose worker stopped heartbeating (the api died or was restarted).

On PostgreSQL :meth:`start` also sends ``NOTIFY hutch_template_builds`` in the same
transaction, delivered at commit, so listening workers claim at once instead of at their
next poll.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import and_, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from hutch.api.store.artifacts import upsert_holding
from hutch.api.store.base import Clock, utc_now
from hutch.api.store.engine import is_sqlite, read_transaction, write_transaction
from hutch.api.store.locks import lock_engine
from hutch.api.store.tables import template_build_logs, template_builds
from hutch.shared.errors import AlreadyExistsError, NotFoundError
from hutch.shared.ids import NodeID

#: The channel started builds are announced on (PostgreSQL).
BUILDS_CHANNEL: Final = "hutch_template_builds"


@dataclass(frozen=True, slots=True)
class BuildLine:
    """One build log line (E2B's ``BuildLogEntry``)."""

    timestamp: datetime
    level: str
    message: str
    step: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BuildRecord:
    """A build's row."""

    build_id: str
    template_id: str
    team_id: str
    status: str
    cpu_count: int
    memory_mb: int
    first: bool
    tags: list[str]
    start: dict[str, Any] | None
    worker: str | None
    heartbeat_at: datetime | None
    reason: str | None
    reason_step: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


def _record(row: Any) -> BuildRecord:
    return BuildRecord(
        build_id=row.id,
        template_id=row.template_id,
        team_id=row.team_id,
        status=row.status,
        cpu_count=row.cpu_count,
        memory_mb=row.memory_mb,
        first=bool(row.first),
        tags=list(json.loads(row.tags)),
        start=json.loads(row.start) if row.start is not None else None,
        worker=row.worker,
        heartbeat_at=row.heartbeat_at,
        reason=row.reason,
        reason_step=row.reason_step,
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
    )


class SqlBuildStore:
    """Template build jobs on SQL."""

    def __init__(self, engine: AsyncEngine, *, clock: Clock = utc_now) -> None:
        self._engine = engine
        self._clock = clock

    async def add_build(
        self,
        *,
        build_id: str,
        template_id: str,
        team_id: str,
        cpu_count: int,
        memory_mb: int,
        first: bool,
        tags: Sequence[str],
    ) -> BuildRecord:
        """Record a requested build (``waiting``)."""
        now = self._clock()
        async with write_transaction(self._engine) as conn:
            await conn.execute(
                template_builds.insert().values(
                    id=build_id, template_id=template_id, team_id=team_id, status="waiting",
                    cpu_count=cpu_count, memory_mb=memory_mb, first=first,
                    tags=json.dumps(list(tags)), created_at=now, updated_at=now,
                )
            )  # fmt: skip
        return await self.get_build(build_id)

    async def find_build(self, build_id: str) -> BuildRecord | None:
        async with read_transaction(self._engine) as conn:
            row = (
                await conn.execute(select(template_builds).where(template_builds.c.id == build_id))
            ).first()
        return _record(row) if row is not None else None

    async def get_build(self, build_id: str) -> BuildRecord:
        found = await self.find_build(build_id)
        if found is None:
            raise NotFoundError(f"build {build_id} not found")
        return found

    async def builds_of(self, template_id: str, *, team_id: str) -> list[BuildRecord]:
        """The team's builds of ``template_id``, newest first."""
        async with read_transaction(self._engine) as conn:
            rows = await conn.execute(
                select(template_builds)
                .where(
                    template_builds.c.template_id == template_id,
                    template_builds.c.team_id == team_id,
                )
                .order_by(template_builds.c.created_at.desc(), template_builds.c.id)
            )
            return [_record(r) for r in rows]

    async def start(self, build_id: str, start: dict[str, Any]) -> BuildRecord:
        """``waiting`` → ``building`` with its start request (to be claimed); announced."""
        now = self._clock()
        async with write_transaction(self._engine) as conn:
            done = await conn.execute(
                template_builds.update()
                .where(template_builds.c.id == build_id, template_builds.c.status == "waiting")
                .values(status="building", start=json.dumps(start), updated_at=now)
            )
            if done.rowcount != 1:
                raise AlreadyExistsError(f"build {build_id} was started already")
            if not is_sqlite(conn):
                await conn.execute(
                    text("SELECT pg_notify(:channel, :payload)"),
                    {"channel": BUILDS_CHANNEL, "payload": build_id},
                )
        return await self.get_build(build_id)

    async def claim(self, worker: str) -> BuildRecord | None:
        """The oldest started, unclaimed build, now ``worker``'s; ``None`` if there is none."""
        now = self._clock()
        async with write_transaction(self._engine) as conn:
            query = (
                select(template_builds.c.id)
                .where(template_builds.c.status == "building", template_builds.c.worker.is_(None))
                .order_by(template_builds.c.created_at)
                .limit(1)
            )
            if not is_sqlite(conn):
                query = query.with_for_update(skip_locked=True)
            build_id = (await conn.execute(query)).scalar_one_or_none()
            if build_id is None:
                return None
            await conn.execute(
                template_builds.update()
                .where(template_builds.c.id == build_id)
                .values(worker=worker, heartbeat_at=now, updated_at=now)
            )
        return await self.get_build(build_id)

    async def heartbeat(self, build_id: str, worker: str) -> bool:
        """Renew the claim; False when it is no longer ``worker``'s (failed as orphaned)."""
        now = self._clock()
        async with write_transaction(self._engine) as conn:
            done = await conn.execute(
                template_builds.update()
                .where(
                    template_builds.c.id == build_id,
                    template_builds.c.worker == worker,
                    template_builds.c.status == "building",
                )
                .values(heartbeat_at=now)
            )
            return bool(done.rowcount)

    async def append_lines(self, build_id: str, lines: Sequence[BuildLine]) -> None:
        """Append log lines after the build's last one."""
        if not lines:
            return
        async with write_transaction(self._engine) as conn:
            last = (
                await conn.execute(
                    select(func.coalesce(func.max(template_build_logs.c.seq), -1)).where(
                        template_build_logs.c.build_id == build_id
                    )
                )
            ).scalar_one()
            await conn.execute(
                template_build_logs.insert(),
                [
                    {
                        "build_id": build_id,
                        "seq": last + 1 + i,
                        "timestamp": line.timestamp,
                        "level": line.level,
                        "message": line.message,
                        "step": line.step,
                    }
                    for i, line in enumerate(lines)
                ],
            )

    async def lines(
        self, build_id: str, *, offset: int = 0, limit: int | None = None
    ) -> list[BuildLine]:
        """The build's log lines from ``offset`` on (all, or ``limit`` of them)."""
        query = (
            select(template_build_logs)
            .where(template_build_logs.c.build_id == build_id, template_build_logs.c.seq >= offset)
            .order_by(template_build_logs.c.seq)
        )
        if limit is not None:
            query = query.limit(limit)
        async with read_transaction(self._engine) as conn:
            rows = await conn.execute(query)
            return [BuildLine(r.timestamp, r.level, r.message, r.step) for r in rows]

    async def finish(
        self,
        build_id: str,
        *,
        status: str,
        worker: str | None,
        reason: str | None = None,
        reason_step: str | None = None,
        holder: NodeID | None = None,
        artifacts: Sequence[str] = (),
    ) -> bool:
        """End a building build (``ready``/``error``); False when it had ended already or
        is not ``worker``'s (``None``: whoever's). With ``holder`` (a cluster's node that
        built it), that node is recorded as holding ``artifacts`` (the template and its
        ``name@build`` version, ADR 0029) in the same transaction."""
        now = self._clock()
        cond = [template_builds.c.id == build_id, template_builds.c.status == "building"]
        if worker is not None:
            cond.append(template_builds.c.worker == worker)
        async with write_transaction(self._engine) as conn:
            done = await conn.execute(
                template_builds.update()
                .where(and_(*cond))
                .values(
                    status=status, reason=reason, reason_step=reason_step,
                    updated_at=now, finished_at=now,
                )
            )  # fmt: skip
            if done.rowcount and holder is not None:
                for artifact in artifacts:
                    await upsert_holding(conn, artifact, holder, now=now)
            return bool(done.rowcount)

    async def open_builds(self, team_id: str) -> list[BuildRecord]:
        """The team's builds that have not ended (``waiting`` or ``building``), oldest first."""
        async with read_transaction(self._engine) as conn:
            rows = await conn.execute(
                select(template_builds)
                .where(
                    template_builds.c.team_id == team_id,
                    template_builds.c.status.in_(("waiting", "building")),
                )
                .order_by(template_builds.c.created_at, template_builds.c.id)
            )
            return [_record(r) for r in rows]

    async def cancel(self, build_id: str, *, reason: str) -> bool:
        """End a ``waiting`` or ``building`` build as ``error`` with ``reason``; False when it
        had ended already. Its worker sees it at its next heartbeat and stops the run."""
        now = self._clock()
        async with write_transaction(self._engine) as conn:
            done = await conn.execute(
                template_builds.update()
                .where(
                    template_builds.c.id == build_id,
                    template_builds.c.status.in_(("waiting", "building")),
                )
                .values(status="error", reason=reason, updated_at=now, finished_at=now)
            )
            return bool(done.rowcount)

    async def count_building(self, team_id: str) -> int:
        """How many of the team's builds are started and not ended."""
        async with read_transaction(self._engine) as conn:
            return int(
                (
                    await conn.execute(
                        select(func.count()).where(
                            template_builds.c.team_id == team_id,
                            template_builds.c.status == "building",
                        )
                    )
                ).scalar_one()
            )

    async def orphans(self, *, heartbeat_before: datetime) -> list[BuildRecord]:
        """Claimed, still building, and not heartbeaten since ``heartbeat_before``."""
        async with read_transaction(self._engine) as conn:
            rows = await conn.execute(
                select(template_builds).where(
                    template_builds.c.status == "building",
                    template_builds.c.worker.is_not(None),
                    template_builds.c.heartbeat_at < heartbeat_before,
                )
            )
            return [_record(r) for r in rows]


def build_listener(
    engine: AsyncEngine, *, channel: str = BUILDS_CHANNEL
) -> Callable[[Callable[[], None]], Any] | None:
    """``LISTEN <channel>`` (default ``hutch_template_builds``; imports use
    ``hutch_template_imports``) on a dedicated connection (PostgreSQL), calling the
    callback per notification; ``None`` on SQLite (the worker polls)."""
    if is_sqlite(engine):
        return None

    @contextlib.asynccontextmanager
    async def listen(callback: Callable[[], None]) -> AsyncIterator[None]:
        own = lock_engine(engine, pool_size=1)
        conn = await own.connect()
        try:
            raw = await conn.get_raw_connection()
            driver: Any = raw.driver_connection
            await driver.add_listener(channel, lambda *_: callback())
            yield
        finally:
            with contextlib.suppress(Exception):
                await conn.invalidate()
            with contextlib.suppress(Exception):
                await conn.close()
            await own.dispose()

    return listen
