"""Two "api processes" on one real PostgreSQL (the store tests' private server): each has
its own engine, its own coordination (locks, elector) and its own services; they share the
database and one fake node, as two ``hutch api`` processes share a store and the nodes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from hutch.api.service.metadata import MetadataService
from hutch.api.service.pausing import PauseService
from hutch.api.service.ports import SandboxSpec
from hutch.api.service.sandboxes import SandboxPolicy, SandboxService
from hutch.api.store.coordination import Coordination, open_coordination
from hutch.api.store.engine import create_engine
from hutch.api.store.migrations import upgrade_to_head
from hutch.api.store.sql import SqlStore, open_sql_store
from hutch.shared.ids import SandboxID, TeamID, TemplateID
from tests.fakes.node import FakeNodeClient
from tests.integration.store.conftest import (  # noqa: F401 - fixtures re-exported
    PostgresDatabases,
    postgres_databases,
    postgres_server_url,
    run_async,
)


@dataclass
class RecordingNode(FakeNodeClient):
    """The fake node, recording when each sandbox operation enters and leaves the node,
    and the most that ever overlapped on one sandbox."""

    events: list[tuple[str, str]] = field(default_factory=list)
    overlap: int = 0
    _active: int = 0

    async def _track(self, op: str, call: object) -> object:
        self._active += 1
        self.overlap = max(self.overlap, self._active)
        self.events.append(("enter", op))
        try:
            await asyncio.sleep(0)  # let any other holder show itself
            return await call  # type: ignore[misc]
        finally:
            self._active -= 1
            self.events.append(("exit", op))

    async def pause(self, sandbox_id: SandboxID, *, keep_memory: bool) -> bool:
        return await self._track("pause", super().pause(sandbox_id, keep_memory=keep_memory))  # type: ignore[return-value]

    async def kill(self, sandbox_id: SandboxID) -> None:
        await self._track("kill", super().kill(sandbox_id))

    async def set_metadata(self, sandbox_id: SandboxID, metadata: Mapping[str, str]) -> None:
        await self._track("set_metadata", super().set_metadata(sandbox_id, metadata))


@dataclass
class ApiProcess:
    """One api's store, coordination and services."""

    store: SqlStore
    coordination: Coordination
    sandboxes: SandboxService
    pausing: PauseService
    metadata: MetadataService

    async def aclose(self) -> None:
        await self.coordination.aclose()
        await self.store.close()


async def open_api(url: str, node: FakeNodeClient, *, lock_wait_s: float = 30.0) -> ApiProcess:
    store = await open_sql_store(url)
    coordination = open_coordination(store.engine, lock_wait_s=lock_wait_s)
    policy = SandboxPolicy(max_sandboxes_per_node=None)
    sandboxes = SandboxService(
        sandboxes=store.sandboxes,
        templates=store.templates,
        node=node,
        policy=policy,
        locks=coordination.locks,
    )
    return ApiProcess(
        store=store,
        coordination=coordination,
        sandboxes=sandboxes,
        pausing=PauseService(
            sandboxes=store.sandboxes,
            node=node,
            locks=coordination.locks,
            service=sandboxes,
            policy=policy,
        ),
        metadata=MetadataService(sandboxes=store.sandboxes, node=node, locks=coordination.locks),
    )


@pytest.fixture(scope="module")
def pg_url(postgres_databases: PostgresDatabases) -> str:  # noqa: F811
    """A migrated PostgreSQL database for this module."""
    url = postgres_databases.create()
    run_async(lambda: upgrade_to_head(url))
    return url


@pytest.fixture
async def admin(pg_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine for looking at (and terminating) other sessions."""
    engine = create_engine(pg_url, pool_size=2)
    try:
        yield engine
    finally:
        await engine.dispose()


async def advisory_locks(admin: AsyncEngine, *, granted: bool) -> list[int]:
    """The backend pids holding (``granted``) or waiting for advisory locks."""
    async with admin.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted = :g "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ),
            {"g": granted},
        )
        return [int(r[0]) for r in rows]


async def wait_for_advisory(admin: AsyncEngine, *, granted: bool, count: int) -> list[int]:
    """Wait (bounded) until ``count`` sessions hold (or wait for) advisory locks."""
    async with asyncio.timeout(15):
        while len(pids := await advisory_locks(admin, granted=granted)) != count:
            await asyncio.sleep(0.02)
    return pids


async def terminate(admin: AsyncEngine, pid: int) -> None:
    """End another session as PostgreSQL does when its process dies."""
    async with admin.connect() as conn:
        await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        await conn.commit()


async def running_sandbox(store: SqlStore, node: FakeNodeClient, team_id: TeamID) -> SandboxID:
    """A sandbox the store has ``running`` and the node runs."""
    from tests.integration.store.factories import new_sandbox

    sbx = (
        await store.sandboxes.create_sandbox(
            new_sandbox(team_id, metadata={"a": "1"}, node_id=node.node_id)
        )
    ).sandbox
    node.running[sbx.id] = SandboxSpec(
        sandbox_id=sbx.id,
        team_id=team_id,
        template_id=TemplateID(sbx.template_id),
        cpu_count=1,
        memory_mb=128,
        disk_mb=256,
    )
    node.metadata[sbx.id] = {"a": "1"}
    return sbx.id
