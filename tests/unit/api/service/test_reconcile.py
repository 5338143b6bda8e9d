"""Startup reconcile through ``NodeClient.reconcile`` (fake node, SQLite store): the node
and the store agree after it, and the proxy gets the adopted sandboxes' routes back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hutch.api.models import NewTemplate, SandboxState, TemplateBuildState
from hutch.api.service.reconcile import reconcile
from hutch.api.service.sandboxes import CreateSandboxRequest, SandboxPolicy, SandboxService
from hutch.api.store.sql import SqlStore, open_sql_store
from hutch.shared.ids import SandboxID
from tests.fakes.node import FakeNodeClient

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Routes:
    published: dict[str, tuple[str, str | None, bool]] = field(default_factory=dict)

    async def publish(self, route):  # type: ignore[no-untyped-def]
        self.published[route.sandbox_id] = (route.address, route.envd_access_token, route.running)

    async def mark_paused(self, sandbox_id):  # type: ignore[no-untyped-def]
        raise AssertionError("reconcile publishes, it does not pause")

    async def withdraw(self, sandbox_id):  # type: ignore[no-untyped-def]
        raise AssertionError("reconcile publishes, it does not withdraw")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    s = await open_sql_store(f"sqlite+aiosqlite:///{tmp_path / 'h.db'}", migrate=True)
    yield s
    await s.close()


async def test_reconcile_adopts_repairs_kills_and_routes(store: SqlStore) -> None:
    node = FakeNodeClient()
    team = await store.teams.ensure_default_team()
    await store.templates.create_template(
        NewTemplate(team_id=team.id, alias="base", build_state=TemplateBuildState.READY)
    )
    service = SandboxService(
        sandboxes=store.sandboxes, templates=store.templates, node=node,
        policy=SandboxPolicy(), clock=lambda: T0,
    )  # fmt: skip
    made = [
        await service.create_sandbox(
            team_id=team.id,
            request=CreateSandboxRequest(template="base", metadata={"n": str(i)}, secure=True),
        )
        for i in range(3)
    ]
    kept, gone, stale = (SandboxID(m.id) for m in made)
    # What a restart finds: one sandbox vanished, one has an old metadata copy, and a
    # sandbox the store never knew runs.
    await node.kill(gone)
    node.metadata[stale] = {"n": "old"}
    orphan = SandboxID("orphan00000000000000")
    node.running[orphan] = node.running[kept]

    routes = Routes()
    report = await reconcile(teams=store.teams, sandboxes=store.sandboxes, node=node, routes=routes)

    assert sorted(report.adopted) == sorted([kept, stale])
    assert report.removed == (orphan,) and orphan not in node.running
    assert report.marked_killed == (gone,)
    row = await store.sandboxes.find_sandbox(gone, team_id=None)
    assert row is not None and row.state is SandboxState.KILLED
    assert node.metadata[stale] == {"n": "2"}  # the store's map won
    assert set(routes.published) == {kept, stale}
    kept_row = await store.sandboxes.find_sandbox(kept, team_id=None)
    assert kept_row is not None
    assert routes.published[kept][1:] == (kept_row.envd_access_token, True)
