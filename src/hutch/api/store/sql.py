"""The composition of the SQL store: one engine, one object per collection."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from hutch.api.store.artifacts import SqlArtifactStore
from hutch.api.store.base import Clock, utc_now
from hutch.api.store.build_files import SqlBuildFileStore
from hutch.api.store.builds import SqlBuildStore
from hutch.api.store.engine import create_engine
from hutch.api.store.imports import SqlImportStore
from hutch.api.store.keys import SqlApiKeyStore
from hutch.api.store.migrations import check_schema_head, upgrade_engine_to_head
from hutch.api.store.node_view import NodeView
from hutch.api.store.nodes import SqlNodeStore
from hutch.api.store.sandboxes import SqlSandboxStore
from hutch.api.store.secrets import SqlSecretStore
from hutch.api.store.snapshots import SqlSnapshotStore
from hutch.api.store.teams import SqlTeamStore
from hutch.api.store.templates import SqlTemplateStore
from hutch.api.store.usage import SqlUsageSampleStore
from hutch.api.store.volumes import SqlVolumeStore


@dataclass(frozen=True, slots=True)
class SqlStore:
    """Every SQL-backed store over one engine; :meth:`close` disposes of the engine."""

    engine: AsyncEngine
    teams: SqlTeamStore
    keys: SqlApiKeyStore
    templates: SqlTemplateStore
    sandboxes: SqlSandboxStore
    volumes: SqlVolumeStore
    snapshots: SqlSnapshotStore
    secrets: SqlSecretStore
    builds: SqlBuildStore
    build_files: SqlBuildFileStore
    imports: SqlImportStore
    nodes: SqlNodeStore
    artifacts: SqlArtifactStore
    usage: SqlUsageSampleStore

    @classmethod
    def on(cls, engine: AsyncEngine, *, clock: Clock = utc_now) -> SqlStore:
        """The stores over an existing engine (no schema check: see :func:`open_sql_store`)."""
        view = NodeView(clock=clock)  # the nodes' writes here keep it current
        return cls(
            engine=engine,
            teams=SqlTeamStore(engine, clock=clock),
            keys=SqlApiKeyStore(engine, clock=clock),
            templates=SqlTemplateStore(engine, clock=clock),
            sandboxes=SqlSandboxStore(engine, clock=clock, view=view),
            volumes=SqlVolumeStore(engine, clock=clock),
            snapshots=SqlSnapshotStore(engine, clock=clock),
            secrets=SqlSecretStore(engine, clock=clock),
            builds=SqlBuildStore(engine, clock=clock),
            build_files=SqlBuildFileStore(engine, clock=clock),
            imports=SqlImportStore(engine, clock=clock),
            nodes=SqlNodeStore(engine, clock=clock, view=view),
            artifacts=SqlArtifactStore(engine, clock=clock),
            usage=SqlUsageSampleStore(engine, clock=clock),
        )

    async def close(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


async def open_sql_store(url: str, *, migrate: bool = False, clock: Clock = utc_now) -> SqlStore:
    """Open the store at ``url``, refusing a database at another migration head.

    With ``migrate`` (the embedded SQLite default of ``hutch serve``), pending migrations
    run first; a scale-out deployment migrates once with ``hutch migrate`` instead.
    """
    engine = create_engine(url)
    try:
        if migrate:
            await upgrade_engine_to_head(engine)
        await check_schema_head(engine)
    except BaseException:
        await engine.dispose()
        raise
    return SqlStore.on(engine, clock=clock)
