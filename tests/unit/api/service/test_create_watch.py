"""A create whose node stops answering ends with the node's lease (ADR 0033), over a SQLite
store with two registered nodes and a fake node client whose ``node-a`` never answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hutch.api.models import NewTemplate, SandboxState, TemplateBuildState
from hutch.api.nodes_model import NodeCapacity, NodeRegistration, NodeUsage
from hutch.api.service.create_watch import LeaseWatch
from hutch.api.service.placement import NoNodeFits, PlacementPolicy
from hutch.api.service.ports import PlacedSandbox, SandboxSpec
from hutch.api.service.sandboxes import CreateSandboxRequest, SandboxPolicy, SandboxService
from hutch.api.store.sql import SqlStore, open_sql_store
from hutch.shared.ids import NodeID, SandboxID, TeamID
from tests.fakes.node import FakeNodeClient

WAIT_S = 60.0  # a deadline for a condition, never an assertion on time


@dataclass
class Clock:
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __call__(self) -> datetime:
        return self.now


@dataclass
class SilentNodes(FakeNodeClient):
    """One client for every node; a node in ``silent`` never answers (partitioned)."""

    silent: set[str] = field(default_factory=set)
    on_node: dict[SandboxID, str] = field(default_factory=dict)
    asked_silent: list[str] = field(default_factory=list)

    async def create(self, spec: SandboxSpec) -> PlacedSandbox:
        assert spec.node_id is not None
        self.on_node[spec.sandbox_id] = spec.node_id
        if spec.node_id in self.silent:
            self.asked_silent.append(f"create {spec.sandbox_id}")
            await asyncio.Event().wait()  # the node never answers
        placed = await super().create(spec)
        return PlacedSandbox(sandbox_id=placed.sandbox_id, node_id=spec.node_id,
                             address=placed.address)  # fmt: skip

    async def kill(self, sandbox_id: SandboxID) -> None:
        if self.on_node.get(sandbox_id) in self.silent:
            self.asked_silent.append(f"kill {sandbox_id}")
            await asyncio.Event().wait()
        await super().kill(sandbox_id)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(tmp_path: Path, clock: Clock) -> AsyncIterator[SqlStore]:
    s = await open_sql_store(f"sqlite+aiosqlite:///{tmp_path / 'h.db'}", migrate=True,
                             clock=clock)  # fmt: skip
    yield s
    await s.close()


async def _setup(
    store: SqlStore, node: SilentNodes, nodes: list[str]
) -> tuple[SandboxService, TeamID]:
    team = await store.teams.ensure_default_team()
    await store.templates.create_template(
        NewTemplate(team_id=team.id, alias="base", build_state=TemplateBuildState.READY)
    )
    for node_id in nodes:
        await store.nodes.register(
            NodeRegistration(
                node_id=NodeID(node_id), address=f"http://{node_id}", api_version="v1",
                version="0.1.0", boot_id="b",
                capacity=NodeCapacity(cpu_count=8, memory_mb=8192, disk_mb=8192,
                                      max_sandboxes=10),
            ),
            lease_s=15,
        )  # fmt: skip
    service = SandboxService(
        sandboxes=store.sandboxes, templates=store.templates, node=node,
        policy=SandboxPolicy(max_sandboxes_per_node=None), placement=PlacementPolicy(),
        node_stats=store.nodes, lease_watch=LeaseWatch(nodes=store.nodes, interval_s=0.02),
    )  # fmt: skip
    return service, team.id


async def _lease_of_a_ends(store: SqlStore, node: SilentNodes, clock: Clock) -> None:
    while not node.asked_silent:  # the create is waiting on node-a
        await asyncio.sleep(0.01)
    clock.now += timedelta(seconds=20)  # node-a missed its beats; node-b beats
    await store.nodes.heartbeat(NodeID("node-b"), boot_id="b", lease_s=15, usage=NodeUsage())


async def test_create_on_a_silent_node_moves_on_when_its_lease_ends(
    store: SqlStore, clock: Clock
) -> None:
    node = SilentNodes(silent={"node-a"})
    service, team = await _setup(store, node, ["node-a", "node-b"])
    create = asyncio.create_task(
        service.create_sandbox(team_id=team, request=CreateSandboxRequest(template="base"))
    )
    await _lease_of_a_ends(store, node, clock)
    made = await asyncio.wait_for(create, WAIT_S)

    assert made.node_id == "node-b" and made.state is SandboxState.RUNNING
    (first,) = [sid for sid, on in node.on_node.items() if on == "node-a"]
    assert first != made.id  # the retry is a new id: the cut-short one never runs twice
    row = await store.sandboxes.find_sandbox(first, team_id=None)
    # Fenced: ``killing`` on node-a, for the reaper once node-a answers (or its reconcile,
    # or the lost-node sweeper); the silent node was never asked to roll back.
    assert row is not None and row.state is SandboxState.KILLING and row.node_id == "node-a"
    assert node.asked_silent == [f"create {first}"]


async def test_create_on_a_silent_only_node_is_a_retryable_503(
    store: SqlStore, clock: Clock
) -> None:
    node = SilentNodes(silent={"node-a"})
    service, team = await _setup(store, node, ["node-a"])
    create = asyncio.create_task(
        service.create_sandbox(team_id=team, request=CreateSandboxRequest(template="base"))
    )
    while not node.asked_silent:
        await asyncio.sleep(0.01)
    clock.now += timedelta(seconds=20)
    with pytest.raises(NoNodeFits) as info:
        await asyncio.wait_for(create, WAIT_S)
    assert info.value.retryable and "stopped answering" in info.value.message
    (first,) = node.on_node
    row = await store.sandboxes.find_sandbox(first, team_id=None)
    assert row is not None and row.state is SandboxState.KILLING
