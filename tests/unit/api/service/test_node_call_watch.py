"""A sandbox's calls to a node that stops answering end with the node's lease (ADR 0033),
through the cluster's real ``NodeRouter`` and the real services over a SQLite store, with a
fake node that can be frozen: while frozen it answers nothing, and what it was asked to
pause or snapshot it carries out once thawed (as a SIGSTOPped node does with the requests
in its socket)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest

from hutch.api.models import NewTemplate, Sandbox, SandboxState, TemplateBuildState
from hutch.api.nodes.router import NodeRouter
from hutch.api.nodes_model import NodeCapacity, NodeRegistration, NodeUsage
from hutch.api.service.artifacts import ArtifactService
from hutch.api.service.create_watch import LeaseWatch, NodeUnresponsiveError
from hutch.api.service.locks import SandboxLocks
from hutch.api.service.metadata import MetadataService
from hutch.api.service.pausing import PauseService
from hutch.api.service.placement import PlacementPolicy
from hutch.api.service.ports import NodeClient
from hutch.api.service.sandboxes import CreateSandboxRequest, SandboxPolicy, SandboxService
from hutch.api.service.snapshots import SnapshotService
from hutch.api.store.sql import SqlStore, open_sql_store
from hutch.shared.ids import NodeID, SandboxID, TeamID, TemplateID
from tests.fakes.node import FakeNodeClient

WAIT_S = 60.0  # a deadline for a condition, never an assertion on time
NODE = NodeID("node-a")
T = TypeVar("T")


@dataclass
class Clock:
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __call__(self) -> datetime:
        return self.now


@dataclass
class FreezableNode(FakeNodeClient):
    """``frozen``: every call waits (recorded in ``asked``); pauses and snapshots asked
    meanwhile are carried out at :meth:`thaw`."""

    frozen: bool = False
    asked: list[str] = field(default_factory=list)
    late: list[Callable[[], None]] = field(default_factory=list)
    thawed: asyncio.Event = field(default_factory=asyncio.Event)

    async def _wait(self, what: str, late: Callable[[], None] | None = None) -> None:
        if self.frozen:
            self.asked.append(what)
            if late is not None:
                self.late.append(late)
            await self.thawed.wait()
            raise AssertionError(f"{what} answered after the thaw: nobody waits any more")

    def thaw(self) -> None:
        self.frozen = False
        for done in self.late:
            done()
        self.late.clear()

    async def kill(self, sandbox_id: SandboxID) -> None:
        await self._wait(f"kill {sandbox_id}")
        await super().kill(sandbox_id)

    async def pause(self, sandbox_id: SandboxID, *, keep_memory: bool) -> bool:
        await self._wait(f"pause {sandbox_id}",
                         lambda: self.paused.__setitem__(sandbox_id, "full"))  # fmt: skip
        return await super().pause(sandbox_id, keep_memory=keep_memory)

    async def snapshot(self, sandbox_id: SandboxID, *, snapshot_id: TemplateID) -> None:
        await self._wait(f"snapshot {sandbox_id}",
                         lambda: self.snapshots.__setitem__(snapshot_id, sandbox_id))  # fmt: skip
        await super().snapshot(sandbox_id, snapshot_id=snapshot_id)

    async def set_metadata(self, sandbox_id: SandboxID, metadata: dict[str, str]) -> None:  # type: ignore[override]
        await self._wait(f"set_metadata {sandbox_id}")
        await super().set_metadata(sandbox_id, metadata)

    async def delete_snapshot(self, snapshot_id: TemplateID) -> None:
        await self._wait(f"delete_snapshot {snapshot_id}")
        await super().delete_snapshot(snapshot_id)


@dataclass
class OneNode:
    """``Clients`` with one node's client."""

    node: FreezableNode

    async def client(self, node_id: NodeID) -> NodeClient:
        assert node_id == NODE
        return self.node

    async def forget(self, node_id: NodeID) -> None:
        pass


@dataclass
class World:
    store: SqlStore
    clock: Clock
    node: FreezableNode
    router: NodeRouter
    artifacts: ArtifactService
    sandboxes: SandboxService
    pausing: PauseService
    snapshots: SnapshotService
    metadata: MetadataService
    team: TeamID

    async def row(self, sandbox_id: str) -> Sandbox:
        found = await self.store.sandboxes.find_sandbox(sandbox_id, team_id=None)
        assert found is not None
        return found

    async def frozen_past_its_lease(self, call: Awaitable[T]) -> NodeUnresponsiveError:
        """Freeze the node, start ``call``, let the lease end once the node was asked;
        the error ``call`` ended with."""
        self.node.frozen = True
        task = asyncio.ensure_future(call)
        while not self.node.asked:
            await asyncio.sleep(0.01)
        self.clock.now += timedelta(seconds=20)  # past the 15 s lease: no beat came
        with pytest.raises(NodeUnresponsiveError) as info:
            await asyncio.wait_for(task, WAIT_S)
        return info.value

    async def beat(self) -> None:
        await self.store.nodes.heartbeat(NODE, boot_id="b", lease_s=15, usage=NodeUsage())


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    clock = Clock()
    store = await open_sql_store(f"sqlite+aiosqlite:///{tmp_path / 'h.db'}", migrate=True,
                                 clock=clock)  # fmt: skip
    team = await store.teams.ensure_default_team()
    await store.templates.create_template(
        NewTemplate(team_id=team.id, alias="base", build_state=TemplateBuildState.READY)
    )
    await store.nodes.register(
        NodeRegistration(
            node_id=NODE, address="http://node-a", api_version="v1", version="0.1.0",
            boot_id="b",
            capacity=NodeCapacity(cpu_count=8, memory_mb=8192, disk_mb=8192, max_sandboxes=10),
        ),
        lease_s=15,
    )  # fmt: skip
    node = FreezableNode(node_id=NODE)
    watch = LeaseWatch(nodes=store.nodes, interval_s=0.02)
    artifacts = ArtifactService(store.artifacts)

    async def find(sandbox_id: SandboxID) -> Sandbox | None:
        return await store.sandboxes.find_sandbox(sandbox_id, team_id=None)

    router = NodeRouter(clients=OneNode(node), find_sandbox=find,
                        list_nodes=store.nodes.list_nodes, artifacts=artifacts,
                        lease_watch=watch)  # fmt: skip
    locks = SandboxLocks()
    policy = SandboxPolicy(max_sandboxes_per_node=None)
    sandboxes = SandboxService(
        sandboxes=store.sandboxes, templates=store.templates, node=router, policy=policy,
        placement=PlacementPolicy(), node_stats=store.nodes, lease_watch=watch, locks=locks,
        clock=clock,
    )  # fmt: skip
    pausing = PauseService(sandboxes=store.sandboxes, node=router, locks=locks,
                           service=sandboxes, policy=policy, clock=clock)  # fmt: skip
    pausing.undo_interval_s = 0.01
    snapshots = SnapshotService(
        sandboxes=store.sandboxes, templates=store.templates, snapshots=store.snapshots,
        node=router, locks=locks, service=sandboxes, artifacts=artifacts,
    )  # fmt: skip
    metadata = MetadataService(sandboxes=store.sandboxes, node=router, locks=locks)
    yield World(store=store, clock=clock, node=node, router=router, artifacts=artifacts,
                sandboxes=sandboxes, pausing=pausing, snapshots=snapshots, metadata=metadata,
                team=team.id)  # fmt: skip
    await store.close()


async def _running(world: World) -> Sandbox:
    made = await world.sandboxes.create_sandbox(
        team_id=world.team, request=CreateSandboxRequest(template="base")
    )
    assert made.state is SandboxState.RUNNING and made.node_id == NODE
    return made


def _names_the_node(exc: NodeUnresponsiveError, doing: str) -> None:
    assert exc.retryable and exc.error_code == "sandbox_node_unresponsive"
    assert "Node node-a stopped answering" in exc.public_message, exc.public_message
    assert doing in exc.public_message, exc.public_message


async def test_a_kill_to_a_frozen_node_ends_with_its_lease_and_is_left_to_the_reaper(
    world: World,
) -> None:
    sbx = await _running(world)
    failed = await world.frozen_past_its_lease(
        world.sandboxes.kill_sandbox(team_id=world.team, sandbox_id=sbx.id)
    )
    _names_the_node(failed, f"sandbox {sbx.id} was being killed")
    row = await world.row(sbx.id)
    # Gone for clients; due at once, so the reaper kills it when the node answers (and the
    # lost-node sweeper reports it killed if it never does).
    assert row.state is SandboxState.KILLING and row.end_at <= world.clock.now
    due = await world.store.sandboxes.list_expired(
        world.clock.now, states=frozenset({SandboxState.KILLING}), limit=10
    )
    assert [s.id for s in due] == [sbx.id]
    world.node.thaw()
    await world.beat()
    await world.sandboxes.finish_kill(sbx.id)  # the reaper's pass
    assert (await world.row(sbx.id)).state is SandboxState.KILLED
    assert sbx.id in world.node.killed and sbx.id not in world.node.running


async def test_a_slow_node_whose_lease_is_renewed_is_waited_for(world: World) -> None:
    sbx = await _running(world)
    world.node.frozen = True
    kill = asyncio.create_task(world.sandboxes.kill_sandbox(team_id=world.team, sandbox_id=sbx.id))
    while not world.node.asked:
        await asyncio.sleep(0.01)
    for _ in range(5):  # it beats: the call goes on, however long
        world.clock.now += timedelta(seconds=10)
        await world.beat()
        await asyncio.sleep(0.05)
    assert not kill.done()
    kill.cancel()
    await asyncio.gather(kill, return_exceptions=True)


async def test_a_pause_to_a_frozen_node_is_running_again_and_undone_once_it_answers(
    world: World,
) -> None:
    sbx = await _running(world)
    failed = await world.frozen_past_its_lease(
        world.pausing.pause(team_id=world.team, sandbox_id=sbx.id)
    )
    _names_the_node(failed, f"sandbox {sbx.id} was being paused")
    assert (await world.row(sbx.id)).state is SandboxState.RUNNING  # never paused unanswered
    # Thawed, the node carries out the pause it was asked for; the undo resumes it there.
    world.node.thaw()
    assert world.node.paused == {sbx.id: "full"}
    await world.beat()

    async def undone() -> None:
        while world.node.paused or sbx.id not in world.node.resumes:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(undone(), WAIT_S)
    row = await world.row(sbx.id)
    assert row.state is SandboxState.RUNNING and row.node_id == NODE
    assert row.address == "10.11.0.250"  # where the node says it runs now


async def test_an_undo_gives_up_once_the_row_moved_on(world: World) -> None:
    sbx = await _running(world)
    await world.frozen_past_its_lease(world.pausing.pause(team_id=world.team, sandbox_id=sbx.id))
    world.node.late.clear()  # the node never paused it
    world.node.thaw()
    # Killed meanwhile (the node still silent to the undo: its lease has not been renewed).
    await world.sandboxes.kill_sandbox(team_id=world.team, sandbox_id=sbx.id)
    await world.beat()
    await asyncio.wait_for(asyncio.gather(*world.pausing._undoing), WAIT_S)
    assert sbx.id not in world.node.resumes


async def test_a_snapshot_on_a_frozen_node_is_recorded_nowhere_and_deleted_when_it_beats(
    world: World,
) -> None:
    sbx = await _running(world)
    failed = await world.frozen_past_its_lease(
        world.snapshots.create_snapshot(team_id=world.team, sandbox_id=sbx.id)
    )
    _names_the_node(failed, f"sandbox {sbx.id} was being snapshotted")
    assert (await world.store.snapshots.list_snapshots(team_id=world.team)).items == []
    (pending,) = await world.store.artifacts.pending(NODE)  # its delete, marked on node-a
    assert pending.startswith("snap-")
    world.node.thaw()
    assert list(world.node.snapshots) == [pending]  # the node finished it late
    await world.beat()
    assert await world.artifacts.collect(NODE, delete_on=world.router.delete_on) == [pending]
    assert world.node.snapshots == {}
    assert (await world.row(sbx.id)).state is SandboxState.RUNNING


async def test_metadata_on_a_frozen_node_ends_with_its_lease_and_is_undone(world: World) -> None:
    sbx = await _running(world)
    failed = await world.frozen_past_its_lease(
        world.metadata.patch_metadata(team_id=world.team, sandbox_id=sbx.id, patch={"k": "v"})
    )
    _names_the_node(failed, f"sandbox {sbx.id}'s metadata was being set")
    assert (await world.row(sbx.id)).metadata == {}
