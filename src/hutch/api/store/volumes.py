"""Volumes: one row per volume; its data lives in a ``VolumeBackend``, never here."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from hutch.api.models import SandboxState, Volume, VolumeMount
from hutch.api.store.base import Clock, utc_now
from hutch.api.store.engine import read_transaction, write_transaction
from hutch.api.store.errors import is_foreign_key_violation, is_unique_violation
from hutch.api.store.tables import sandbox_volume_mounts, sandboxes, teams, volumes
from hutch.shared.errors import (
    AlreadyExistsError,
    NotFoundError,
    QuotaExceededError,
    UnavailableError,
)
from hutch.shared.ids import NodeID, SandboxID, TeamID, VolumeID, is_volume_id


class VolumeNodeTaken(UnavailableError):
    """A local volume's data is on another node than the one chosen for the sandbox."""

    def __init__(self, volume_id: str, name: str, node_id: str) -> None:
        super().__init__(
            f"volume {name} ({volume_id}) lives on node {node_id}",
            error_code="volume_node_unavailable",
        )
        self.volume_id = volume_id
        self.node_id = node_id


def _volume(row: Any) -> Volume:
    return Volume(
        id=VolumeID(row.id),
        team_id=TeamID(row.team_id),
        name=row.name,
        quota_bytes=row.quota_bytes,
        backend=row.backend,
        token_secret=row.token_secret,
        created_at=row.created_at,
        node_id=getattr(row, "node_id", None),
    )


async def _reserve_volume_bytes(
    conn: AsyncConnection, team_id: TeamID, new_bytes: int, limit: int
) -> None:
    """:class:`QuotaExceededError` if ``new_bytes`` more would take the team's volumes
    over ``limit`` bytes. In the insert's transaction, behind the team's row lock on
    PostgreSQL (SQLite serialises writers), so two creates cannot both take the last
    bytes."""
    if conn.dialect.name != "sqlite":
        await conn.execute(select(teams.c.id).where(teams.c.id == team_id).with_for_update())
    used = int(
        (
            await conn.execute(
                select(func.coalesce(func.sum(volumes.c.quota_bytes), 0)).where(
                    volumes.c.team_id == team_id
                )
            )
        ).scalar_one()
    )
    if used + new_bytes > limit:
        raise QuotaExceededError(
            f"team {team_id}: volumes {used} + {new_bytes} bytes, quota {limit}",
            public_message=f"You have reached the maximum total size of volumes "
            f"({limit} bytes; {used} in use, this volume needs {new_bytes}): quota "
            "maxVolumeBytes of this team",
        )


class SqlVolumeStore:
    """:class:`~hutch.api.store.base.VolumeStore` on SQL."""

    def __init__(self, engine: AsyncEngine, *, clock: Clock = utc_now) -> None:
        self._engine = engine
        self._clock = clock

    async def create_volume(
        self,
        *,
        volume_id: VolumeID,
        team_id: TeamID,
        name: str,
        quota_bytes: int,
        backend: str,
        token_secret: str,
        max_total_bytes: int | None = None,
        node_id: str | None = None,
    ) -> Volume:
        """Insert a volume (``node_id``: the node holding a local volume's data, ADR
        0034); :class:`AlreadyExistsError` if the team already has ``name``; with
        ``max_total_bytes``, :class:`QuotaExceededError` if the team's volumes with this
        one would be larger (checked in the insert's transaction)."""
        vol = Volume(
            id=volume_id,
            team_id=team_id,
            name=name,
            quota_bytes=quota_bytes,
            backend=backend,
            token_secret=token_secret,
            created_at=self._clock(),
            node_id=node_id,
        )
        try:
            async with write_transaction(self._engine) as conn:
                if max_total_bytes is not None:
                    await _reserve_volume_bytes(conn, team_id, quota_bytes, max_total_bytes)
                await conn.execute(
                    volumes.insert().values(
                        id=vol.id,
                        team_id=vol.team_id,
                        name=vol.name,
                        quota_bytes=vol.quota_bytes,
                        backend=vol.backend,
                        token_secret=vol.token_secret,
                        created_at=vol.created_at,
                        node_id=node_id,
                    )
                )
        except IntegrityError as exc:
            if is_unique_violation(exc):
                raise AlreadyExistsError(
                    f"volume {name!r} already exists in team {team_id}",
                    public_message=f"Volume with name '{name}' already exists",
                ) from exc
            if is_foreign_key_violation(exc):
                raise NotFoundError(f"team {team_id} not found") from exc
            raise
        return vol

    async def find_volume(self, id_or_name: str, *, team_id: TeamID | None) -> Volume | None:
        """The volume with this id (or, within ``team_id``, this name), or ``None``.

        ``team_id=None`` looks an id up across teams (the content API, whose token names
        the team); another team's volume is ``None`` otherwise.
        """
        if is_volume_id(id_or_name):
            query = select(volumes).where(volumes.c.id == id_or_name)
        elif team_id is not None:
            query = select(volumes).where(volumes.c.name == id_or_name)
        else:
            return None
        if team_id is not None:
            query = query.where(volumes.c.team_id == team_id)
        async with read_transaction(self._engine) as conn:
            row = (await conn.execute(query)).first()
        return _volume(row) if row is not None else None

    async def get_volume(self, id_or_name: str, *, team_id: TeamID | None) -> Volume:
        """As :meth:`find_volume`; :class:`NotFoundError` when there is none."""
        vol = await self.find_volume(id_or_name, team_id=team_id)
        if vol is None:
            raise NotFoundError(
                f"volume {id_or_name!r} not found", public_message=f"Volume {id_or_name} not found"
            )
        return vol

    async def list_volumes(self, *, team_id: TeamID | None) -> list[Volume]:
        """The team's volumes (every volume with ``None``), oldest first."""
        query = select(volumes).order_by(volumes.c.created_at, volumes.c.id)
        if team_id is not None:
            query = query.where(volumes.c.team_id == team_id)
        async with read_transaction(self._engine) as conn:
            return [_volume(r) for r in await conn.execute(query)]

    async def delete_volume(self, volume_id: VolumeID, *, team_id: TeamID) -> None:
        """Delete the row; :class:`NotFoundError` if the team has no such volume."""
        async with write_transaction(self._engine) as conn:
            result = await conn.execute(
                delete(volumes).where(volumes.c.id == volume_id, volumes.c.team_id == team_id)
            )
        if result.rowcount == 0:
            raise NotFoundError(f"volume {volume_id} not found")

    async def add_mounts(
        self, sandbox_id: SandboxID, mounts: Iterable[VolumeMount], *, node_id: str | None = None
    ) -> None:
        """Record that ``sandbox_id`` mounts these volumes (removed with the sandbox row).

        With ``node_id`` (the sandbox's node), :class:`VolumeNodeTaken` when one of its
        local volumes lives on another node (ADR 0034: placement pins them, so only a
        volume whose node changed meanwhile); one without a node yet (made before volumes
        lived on nodes) is claimed for it in the same transaction."""
        mounts = list(mounts)
        rows = [
            {"sandbox_id": sandbox_id, "volume_id": m.volume_id, "path": m.path} for m in mounts
        ]
        if not rows:
            return
        local = sorted({m.volume_id for m in mounts if m.backend == "local"})
        async with write_transaction(self._engine) as conn:
            if node_id is not None and local:
                v = volumes.c
                # A conditional UPDATE: of two racing first mounts, one sets the node (the
                # row lock orders them on PostgreSQL, BEGIN IMMEDIATE on SQLite), the other
                # then reads it below.
                await conn.execute(
                    update(volumes)
                    .where(v.id.in_(local), v.node_id.is_(None))
                    .values(node_id=node_id)
                )
                held = await conn.execute(select(v.id, v.name, v.node_id).where(v.id.in_(local)))
                for row in held:
                    if row.node_id != node_id:
                        raise VolumeNodeTaken(row.id, row.name, row.node_id)
            await conn.execute(sandbox_volume_mounts.insert(), rows)

    async def claim_volume_node(self, volume_id: VolumeID, node_id: str) -> NodeID:
        """The node of ``volume_id``: ``node_id`` if it had none (a volume made before
        volumes lived on nodes), else the one it has (a conditional ``UPDATE``, so two
        racing claims agree)."""
        v = volumes.c
        async with write_transaction(self._engine) as conn:
            await conn.execute(
                update(volumes)
                .where(v.id == volume_id, v.node_id.is_(None))
                .values(node_id=node_id)
            )
            held = (await conn.execute(select(v.node_id).where(v.id == volume_id))).scalar()
        if held is None:
            raise NotFoundError(f"volume {volume_id} not found")
        return NodeID(held)

    async def mounting_sandboxes(self, volume_id: VolumeID) -> list[SandboxID]:
        """The sandboxes that mount ``volume_id`` and are not killed yet, by id."""
        query = (
            select(sandbox_volume_mounts.c.sandbox_id)
            .join(sandboxes, sandboxes.c.id == sandbox_volume_mounts.c.sandbox_id)
            .where(
                sandbox_volume_mounts.c.volume_id == volume_id,
                sandboxes.c.state != SandboxState.KILLED.value,
            )
            .distinct()
            .order_by(sandbox_volume_mounts.c.sandbox_id)
        )
        async with read_transaction(self._engine) as conn:
            return [SandboxID(r.sandbox_id) for r in await conn.execute(query)]

    async def mounts_of(self, sandbox_id: SandboxID) -> list[VolumeMount]:
        """The volumes ``sandbox_id`` mounts, by path."""
        query = (
            select(sandbox_volume_mounts, volumes.c.name, volumes.c.backend)
            .join(volumes, volumes.c.id == sandbox_volume_mounts.c.volume_id)
            .where(sandbox_volume_mounts.c.sandbox_id == sandbox_id)
            .order_by(sandbox_volume_mounts.c.path)
        )
        async with read_transaction(self._engine) as conn:
            return [
                VolumeMount(
                    volume_id=VolumeID(r.volume_id), name=r.name, path=r.path, backend=r.backend
                )
                for r in await conn.execute(query)
            ]

    async def mounts_of_many(
        self, sandbox_ids: Collection[SandboxID]
    ) -> dict[SandboxID, list[VolumeMount]]:
        """:meth:`mounts_of` for many sandboxes in one query (a listing page); every id
        is a key, with ``[]`` when it mounts nothing."""
        found: dict[SandboxID, list[VolumeMount]] = {sid: [] for sid in sandbox_ids}
        if not found:
            return found
        query = (
            select(sandbox_volume_mounts, volumes.c.name, volumes.c.backend)
            .join(volumes, volumes.c.id == sandbox_volume_mounts.c.volume_id)
            .where(sandbox_volume_mounts.c.sandbox_id.in_(list(found)))
            .order_by(sandbox_volume_mounts.c.sandbox_id, sandbox_volume_mounts.c.path)
        )
        async with read_transaction(self._engine) as conn:
            for r in await conn.execute(query):
                found[SandboxID(r.sandbox_id)].append(
                    VolumeMount(
                        volume_id=VolumeID(r.volume_id), name=r.name, path=r.path, backend=r.backend
                    )
                )
        return found
