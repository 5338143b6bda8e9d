"""Startup reconcile through ``NodeClient.reconcile`` (fake node, SQLite store): the node
and the store agree after it, and the proxy gets the adopted sandboxes' routes back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hutch.api.models import NewTemplate, SandboxState, TemplateBuildState
from hutch.api.nodes_model import NodeCapacity, NodeRegistration
from hutch.api.service.reconcile import reconcile, registration_reconciler
from hutch.api.service.sandboxes import CreateSandboxRequest, SandboxPolicy, SandboxService
from hutch.api.store.sql import SqlStore, open_sql_store
from hutch.shared.ids import NodeID, SandboxID
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


def _registration(incarnation: str, boot_id: str = "boot-1") -> NodeRegistration:
    return NodeRegistration(
        node_id=NodeID("fake-node"), address="http://fake-node", api_version="v1",
        version="0.1.0", boot_id=boot_id, incarnation=incarnation,
        capacity=NodeCapacity(cpu_count=4, memory_mb=4096, disk_mb=4096, max_sandboxes=8),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("again", "survives"),
    [
        (("inc-1", "boot-1"), True),  # the same live process (a lost lease): kept
        (("inc-2", "boot-1"), False),  # the node process restarted: its creates died
        (("inc-1", "boot-2"), False),  # the host rebooted
    ],
)
async def test_reregistration_keeps_a_live_process_creates_in_flight(
    store: SqlStore, again: tuple[str, str], survives: bool
) -> None:
    node = FakeNodeClient(create_gate=asyncio.Event())
    team = await store.teams.ensure_default_team()
    await store.templates.create_template(
        NewTemplate(team_id=team.id, alias="base", build_state=TemplateBuildState.READY)
    )
    service = SandboxService(
        sandboxes=store.sandboxes, templates=store.templates, node=node,
        policy=SandboxPolicy(), clock=lambda: T0,
    )  # fmt: skip
    await store.nodes.register(_registration("inc-1"), lease_s=30)
    create = asyncio.create_task(
        service.create_sandbox(team_id=team.id, request=CreateSandboxRequest(template="base"))
    )
    while not node.running:  # the node is making it; the row is ``creating``
        await asyncio.sleep(0.01)
    (sid,) = node.running

    async def client(_: NodeID) -> FakeNodeClient:
        return node

    async def forget(_: NodeID) -> None:
        return None

    on_registered = registration_reconciler(
        teams=store.teams, sandboxes=store.sandboxes, client=client, forget=forget,
        routes=Routes(),
    )  # fmt: skip
    registered = await store.nodes.register(_registration(*again), lease_s=30)
    assert registered.same_process is survives
    outcome = await on_registered(registered)

    row = await store.sandboxes.find_sandbox(sid, team_id=None)
    assert row is not None
    if survives:
        assert outcome.marked_killed == () and sid in node.running
        assert row.state is SandboxState.CREATING
        node.create_gate.set()
        made = await asyncio.wait_for(create, 60)
        assert made.id == sid
        row = await store.sandboxes.find_sandbox(sid, team_id=None)
        assert row is not None and row.state is SandboxState.RUNNING
    else:
        assert outcome.marked_killed == (sid,) and sid not in node.running
        assert row.state is SandboxState.KILLED
        node.create_gate.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(create, 60)  # it answers an error and rolls back
        row = await store.sandboxes.find_sandbox(sid, team_id=None)
        assert row is None or row.state is SandboxState.KILLED
        assert sid not in node.running
