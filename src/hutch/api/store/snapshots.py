"""The snapshot store: which of a team's templates are snapshots, of which sandbox.

A snapshot's files and start facts are a template (``templates`` row, same id); this table
adds its source sandbox and creation time, for ``GET /snapshots`` and its filters, and the
source's network policy, which a create from the snapshot inherits.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from hutch.api.models import NetworkConfig, Snapshot, SnapshotPage
from hutch.api.store.base import Clock, utc_now
from hutch.api.store.engine import read_transaction, write_transaction
from hutch.api.store.pagination import Cursor, decode_cursor, encode_cursor
from hutch.api.store.tables import snapshots, templates
from hutch.shared.errors import InvalidArgumentError
from hutch.shared.ids import SandboxID, TeamID, TemplateID


class SqlSnapshotStore:
    """Snapshots on SQL."""

    def __init__(self, engine: AsyncEngine, *, clock: Clock = utc_now) -> None:
        self._engine = engine
        self._clock = clock

    async def record_snapshot(
        self,
        snapshot_id: TemplateID,
        *,
        team_id: TeamID,
        sandbox_id: SandboxID,
        network: NetworkConfig | None = None,
    ) -> Snapshot:
        """Mark template ``snapshot_id`` (created already) as a snapshot of ``sandbox_id``,
        taken while ``network`` was its policy."""
        now = self._clock()
        network = network or NetworkConfig()
        stored = (
            None if network == NetworkConfig() else json.dumps(network.to_json(), sort_keys=True)
        )
        async with write_transaction(self._engine) as conn:
            await conn.execute(
                snapshots.insert().values(
                    id=snapshot_id, team_id=team_id, sandbox_id=sandbox_id, created_at=now,
                    network=stored,
                )
            )  # fmt: skip
            alias = (
                await conn.execute(select(templates.c.alias).where(templates.c.id == snapshot_id))
            ).scalar_one_or_none()
        return Snapshot(
            id=snapshot_id, team_id=team_id, sandbox_id=sandbox_id, alias=alias, created_at=now,
            network=network,
        )  # fmt: skip

    async def find_snapshot(self, snapshot_id: TemplateID, *, team_id: TeamID) -> Snapshot | None:
        """The team's snapshot ``snapshot_id`` (a template id), or None if it is none."""
        s, t = snapshots.c, templates.c
        query = (
            select(s.id, s.team_id, s.sandbox_id, s.created_at, s.network, t.alias)
            .join(templates, t.id == s.id)
            .where(s.id == snapshot_id, s.team_id == team_id)
        )
        async with read_transaction(self._engine) as conn:
            row = (await conn.execute(query)).one_or_none()
        return None if row is None else _snapshot(row)

    async def list_snapshots(
        self,
        *,
        team_id: TeamID,
        sandbox_id: str | None = None,
        name: str | None = None,
        limit: int = 100,
        next_token: str | None = None,
    ) -> SnapshotPage:
        """The team's snapshots, oldest first; ``name`` matches the id or the alias."""
        if not 1 <= limit <= 1000:
            raise InvalidArgumentError("limit must be between 1 and 1000")
        s, t = snapshots.c, templates.c
        query = (
            select(s.id, s.team_id, s.sandbox_id, s.created_at, s.network, t.alias)
            .join(templates, t.id == s.id)
            .where(s.team_id == team_id)
            .order_by(s.created_at, s.id)
            .limit(limit + 1)
        )
        if sandbox_id:
            query = query.where(s.sandbox_id == sandbox_id)
        if name:
            query = query.where(or_(s.id == name, t.alias == name))
        if next_token:
            after = decode_cursor(next_token)
            query = query.where(
                or_(
                    s.created_at > after.started_at,
                    and_(s.created_at == after.started_at, s.id > after.sandbox_id),
                )
            )
        async with read_transaction(self._engine) as conn:
            rows = list(await conn.execute(query))
        items = [_snapshot(r) for r in rows[:limit]]
        token = None
        if len(rows) > limit:
            last = items[-1]
            token = encode_cursor(
                Cursor(started_at=last.created_at, sandbox_id=SandboxID(str(last.id)))
            )
        return SnapshotPage(items=items, next_token=token)


def _snapshot(row: Any) -> Snapshot:
    return Snapshot(
        id=TemplateID(row.id),
        team_id=TeamID(row.team_id),
        sandbox_id=SandboxID(row.sandbox_id),
        alias=row.alias,
        created_at=row.created_at,
        network=NetworkConfig.from_json(json.loads(row.network) if row.network else None),
    )
