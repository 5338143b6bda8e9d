"""SandboxService with the fake node over a SQLite store in tmp_path (no network)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hutch.api.http.query import parse_metadata_filter
from hutch.api.models import NewTemplate, SandboxState, TemplateBuildState
from hutch.api.service.reaper import Reaper
from hutch.api.service.sandboxes import (
    CreateOutcomeUnknownError,
    CreateSandboxRequest,
    SandboxPolicy,
    SandboxService,
)
from hutch.api.store.sql import SqlStore, open_sql_store
from hutch.shared.errors import HutchError, UnavailableError
from hutch.shared.ids import TeamID
from tests.fakes.node import FakeNodeClient

T0 = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    s = await open_sql_store(f"sqlite+aiosqlite:///{tmp_path / 'h.db'}", migrate=True)
    yield s
    await s.close()


async def _setup(store: SqlStore, node: FakeNodeClient) -> tuple[SandboxService, TeamID]:
    team = await store.teams.ensure_default_team()
    await store.templates.create_template(
        NewTemplate(team_id=team.id, alias="base", build_state=TemplateBuildState.READY)
    )
    service = SandboxService(
        sandboxes=store.sandboxes,
        templates=store.templates,
        node=node,
        policy=SandboxPolicy(),
        clock=lambda: T0,
    )
    return service, team.id


async def test_create_failed_rollback_is_outcome_unknown(store: SqlStore) -> None:
    node = FakeNodeClient(fail_next_create=HutchError("boom"), fail_kill=HutchError("kill broke"))
    service, team = await _setup(store, node)
    with pytest.raises(CreateOutcomeUnknownError) as info:
        await service.create_sandbox(team_id=team, request=CreateSandboxRequest(template="base"))
    assert info.value.retryable is False


async def test_create_whose_node_stops_answering_leaves_the_kill_to_the_reaper(
    store: SqlStore,
) -> None:
    """A node that dies mid-create cannot roll back: the row goes ``killing`` with its
    deadline now (never a ghost ``creating``), the create fails with the node's error, and
    the reaper kills the sandbox on the node once it answers again."""
    node = FakeNodeClient(fail_next_create=UnavailableError("node gone"),
                          fail_kill=UnavailableError("node gone"))  # fmt: skip
    service, team = await _setup(store, node)
    with pytest.raises(UnavailableError, match="node gone"):
        await service.create_sandbox(team_id=team, request=CreateSandboxRequest(template="base"))
    sandbox_id = node.created[0]
    row = await store.sandboxes.find_sandbox(sandbox_id, team_id=team)
    assert row is not None and row.state is SandboxState.KILLING and row.end_at == T0
    reaper = Reaper(sandboxes=store.sandboxes, service=service, clock=lambda: T0)
    await reaper.reap_once(T0)  # the node still does not answer: it stays killing
    row = await store.sandboxes.find_sandbox(sandbox_id, team_id=team)
    assert row is not None and row.state is SandboxState.KILLING
    node.fail_kill = None  # the node is back
    await reaper.reap_once(T0)
    row = await store.sandboxes.find_sandbox(sandbox_id, team_id=team)
    assert row is not None and row.state is SandboxState.KILLED
    assert node.running == {} and node.killed == [sandbox_id]


async def test_reaper_kills_creates_whose_api_died(store: SqlStore) -> None:
    """A row still ``creating`` past ``stale_create_s`` (its api died between the row and
    the node's answer): the reaper kills it on its node; a younger one is left alone."""
    node = FakeNodeClient(create_gate=asyncio.Event())
    service, team = await _setup(store, node)
    task = asyncio.create_task(
        service.create_sandbox(team_id=team, request=CreateSandboxRequest(template="base"))
    )
    while not node.created:
        await asyncio.sleep(0.01)
    sandbox_id = node.created[0]
    reaper = Reaper(sandboxes=store.sandboxes, service=service, stale_create_s=60)
    assert await reaper.settle_stale_creates(T0 + timedelta(seconds=59)) == 0
    assert await reaper.settle_stale_creates(T0 + timedelta(seconds=61)) == 1
    row = await store.sandboxes.find_sandbox(sandbox_id, team_id=team)
    assert row is not None and row.state is SandboxState.KILLED
    assert sandbox_id in node.killed and node.running == {}
    # The create's own api was alive after all: its late answer finds the row killed.
    node.create_gate.set()  # type: ignore[union-attr]
    with pytest.raises(HutchError, match="killed while it was being created"):
        await task
    assert node.running == {}


async def test_create_cancelled_rolls_back(store: SqlStore) -> None:
    node = FakeNodeClient(create_gate=asyncio.Event())
    service, team = await _setup(store, node)
    task = asyncio.create_task(
        service.create_sandbox(team_id=team, request=CreateSandboxRequest(template="base"))
    )
    while not node.created:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert node.running == {}
    page = await store.sandboxes.list_sandboxes(team_id=team)
    assert page.items == []


async def test_kill_during_create_leaves_nothing(store: SqlStore) -> None:
    node = FakeNodeClient(create_gate=asyncio.Event())
    service, team = await _setup(store, node)
    task = asyncio.create_task(
        service.create_sandbox(team_id=team, request=CreateSandboxRequest(template="base"))
    )
    while not node.created:
        await asyncio.sleep(0.01)
    killed = await service.kill_sandbox(team_id=team, sandbox_id=node.created[0])
    assert killed.state in {SandboxState.KILLED, SandboxState.KILLING}
    node.create_gate.set()  # type: ignore[union-attr]
    with pytest.raises(HutchError):
        await task
    assert node.running == {}


def test_metadata_filter_undoes_the_sdks_double_encoding() -> None:
    from urllib.parse import quote, urlencode

    meta = {"a b": "c&d=e/é", "plus+": "%25"}
    sent = urlencode({quote(k): quote(v) for k, v in meta.items()})
    assert parse_metadata_filter(sent) == meta
