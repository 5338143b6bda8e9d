"""Concurrent creates do not queue on one node's lock (ADR 0026), and never overbook.

On the store tests' real PostgreSQL: a create whose node's placement lock another create
holds takes the other equally good node at once (``pg_try_advisory_xact_lock``); a
heartbeat is not held up by a placement; when every node
that fits is held it waits for one instead of answering that nothing fits, and reads the
load again after the wait. Then a seeded burst of creates and kills of mixed sizes through
two ``SandboxService``s on two engines (two api processes) against nodes with CPU and
memory limits: no node is ever over its capacity, and what each node runs is exactly the
store's live rows on it (SQLite, whose one writer serialises, runs the burst too).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text

from hutch.api.models import NODE_BUSY_STATES, NewSandbox, NewTemplate, TemplateBuildState
from hutch.api.nodes_model import NodeCapacity, NodeRegistration, NodeUsage
from hutch.api.service.placement import Demand, NoNodeFits, Placement, PlacementPolicy
from hutch.api.service.ports import PlacedSandbox, SandboxSpec
from hutch.api.service.sandboxes import CreateSandboxRequest, SandboxPolicy, SandboxService
from hutch.api.store.engine import write_transaction
from hutch.api.store.placement import reserve_node
from hutch.api.store.sandbox_rows import sandbox_values
from hutch.api.store.sql import SqlStore, open_sql_store
from hutch.api.store.tables import sandboxes
from hutch.shared.ids import NodeID, SandboxID, TeamID, TemplateID
from tests.fakes.node import FakeNodeClient
from tests.integration.cluster.conftest import postgres_only
from tests.integration.store.conftest import PostgresDatabases

#: Capacity is exact in these tests (no overcommit), so overbooking would show.
EXACT = PlacementPolicy(cpu_overcommit=1.0, memory_overcommit=1.0)
WAIT_S = 60.0  # a deadline for waiting on a condition, never an assertion on time


async def _setup(url: str, capacities: dict[str, tuple[int, int, int]]) -> tuple[SqlStore, TeamID]:
    """A migrated store with templates ``small`` (1 vCPU, 512 MiB) and ``big`` (2 vCPUs,
    1536 MiB) and nodes ``{id: (cpus, memory MiB, max sandboxes)}``."""
    store = await open_sql_store(url, migrate=True)
    team = await store.teams.ensure_default_team()
    for alias, cpu, memory in (("small", 1, 512), ("big", 2, 1536)):
        await store.templates.create_template(
            NewTemplate(team_id=team.id, alias=alias, build_state=TemplateBuildState.READY,
                        cpu_count=cpu, memory_mb=memory)
        )  # fmt: skip
    for node_id, (cpu, memory, most) in capacities.items():
        await store.nodes.register(
            NodeRegistration(
                node_id=NodeID(node_id), address=f"http://{node_id}", api_version="v1",
                version="0.1.0", boot_id="b",
                capacity=NodeCapacity(cpu_count=cpu, memory_mb=memory, disk_mb=1,
                                      max_sandboxes=most),
            ),
            lease_s=600,
        )  # fmt: skip
    return store, team.id


def _row(team: TeamID, template: TemplateID) -> NewSandbox:
    now = datetime.now(UTC)
    return NewSandbox(
        team_id=team, template_id=template, started_at=now, end_at=now + timedelta(hours=1),
        envd_version="0.6.13", cpu_count=1, memory_mb=512, disk_mb=512,
    )  # fmt: skip


SMALL = Placement(demand=Demand(cpu_count=1, memory_mb=512), policy=EXACT)


async def _lock_waiters(store: SqlStore) -> int:
    async with store.engine.connect() as probe:
        return int(
            (
                await probe.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )
                )
            ).scalar_one()
        )


async def _other_node_while_best_is_held(url: str) -> tuple[NodeID, str]:
    store, team = await _setup(url, {"node-a": (4, 4096, 10), "node-b": (4, 4096, 10)})
    other = await open_sql_store(url)
    template = (await store.templates.find_template("small", team_id=team)).id  # type: ignore[union-attr]
    try:
        async with write_transaction(store.engine) as conn:
            held = await reserve_node(conn, SMALL)  # the best node, its lock held
            second = await asyncio.wait_for(
                other.sandboxes.create_sandbox(_row(team, template), placer=SMALL), WAIT_S
            )
            # The node's row is not what placement locks: its heartbeat goes through.
            await asyncio.wait_for(
                other.nodes.heartbeat(held, boot_id="b", lease_s=600, usage=NodeUsage()), WAIT_S
            )
            await conn.execute(text("SELECT 1"))
        assert second.sandbox.node_id is not None
        return held, second.sandbox.node_id
    finally:
        await other.close()
        await store.close()


def test_a_create_takes_the_next_node_while_the_best_is_held(
    postgres_databases: PostgresDatabases,
) -> None:
    held, placed = asyncio.run(_other_node_while_best_is_held(postgres_databases.create()))
    assert held == "node-a"  # the best (ties by id)
    assert placed == "node-b"  # did not wait for node-a's lock (that would never have come)


async def _waits_for_the_only_node(url: str, room: int) -> tuple[int, object]:
    store, team = await _setup(url, {"only": (16, 16384, room)})
    other = await open_sql_store(url)
    template = (await store.templates.find_template("small", team_id=team)).id  # type: ignore[union-attr]
    try:
        async with write_transaction(store.engine) as conn:
            assert await reserve_node(conn, SMALL) == "only"
            waiting = asyncio.create_task(
                other.sandboxes.create_sandbox(_row(team, template), placer=SMALL)
            )
            deadline = asyncio.get_running_loop().time() + WAIT_S
            while await _lock_waiters(store) == 0:  # a condition, with a deadline
                assert not waiting.done(), waiting
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.01)
            waiters = await _lock_waiters(store)
            mine = dataclasses.replace(_row(team, template), node_id=NodeID("only"))
            await conn.execute(  # the holder's own row, on the node it locked
                sandboxes.insert().values(**sandbox_values(SandboxID("heldsandbox0001"), mine))
            )
        try:
            got: object = (await asyncio.wait_for(waiting, WAIT_S)).sandbox.node_id
        except NoNodeFits as exc:
            got = exc
        return waiters, got
    finally:
        await other.close()
        await store.close()


@pytest.mark.parametrize("room", [2, 1])
def test_a_create_waits_for_the_only_node_that_fits_and_reads_it_again(
    postgres_databases: PostgresDatabases, room: int
) -> None:
    """Every fitting node held: the create waits on it (it does not answer that nothing
    fits); once the holder commits it sees the holder's sandbox: room for it, or a 503."""
    waiters, got = asyncio.run(_waits_for_the_only_node(postgres_databases.create(), room))
    assert waiters >= 1
    if room == 2:
        assert got == "only"
    else:
        assert isinstance(got, NoNodeFits)
        assert got.reasons == {"only": "runs 1 sandboxes, its limit is 1"}


# -- the burst --------------------------------------------------------------------------

NODES = {"n1": (6, 6144, 100), "n2": (4, 8192, 100), "n3": (5, 4096, 100)}
OPERATIONS = 90


@dataclass
class PlacedFake(FakeNodeClient):
    """One node client for every node: records what each node runs; yields so that
    creates and kills interleave."""

    async def create(self, spec: SandboxSpec) -> PlacedSandbox:
        await asyncio.sleep(0.005)
        placed = await super().create(spec)
        assert spec.node_id is not None
        return PlacedSandbox(sandbox_id=placed.sandbox_id, node_id=spec.node_id,
                             address=placed.address)  # fmt: skip


async def _burst(url: str, seed: int) -> tuple[dict[str, list[int]], dict[str, set[str]],
                                              dict[str, set[str]], Counter[str]]:  # fmt: skip
    rng = random.Random(seed)
    setup, team = await _setup(url, NODES)
    node = PlacedFake()
    stores = [await open_sql_store(url), await open_sql_store(url)]
    services = [
        SandboxService(
            sandboxes=s.sandboxes,
            templates=s.templates,
            node=node,
            policy=SandboxPolicy(max_sandboxes_per_node=None),
            placement=EXACT,
            node_stats=s.nodes,
        )
        for s in stores
    ]
    live: list[str] = []
    outcomes: Counter[str] = Counter()
    peaks: dict[str, list[int]] = defaultdict(lambda: [0, 0])

    async def step(i: int) -> None:
        service = services[i % 2]
        if live and rng.random() < 0.35:
            victim = live.pop(rng.randrange(len(live)))
            await service.kill_sandbox(team_id=team, sandbox_id=victim)
            outcomes["killed"] += 1
            return
        template = rng.choice(["small", "small", "big"])
        try:
            sandbox = await service.create_sandbox(
                team_id=team, request=CreateSandboxRequest(template=template)
            )
        except NoNodeFits:
            outcomes["refused"] += 1
            return
        live.append(sandbox.id)
        outcomes["created"] += 1
        loads = await setup.nodes.loads()
        for node_id, load in loads.items():  # observed while the burst runs
            peak = peaks[node_id]
            peak[0] = max(peak[0], load.allocated_cpu)
            peak[1] = max(peak[1], load.allocated_memory_mb)

    try:
        pending = [asyncio.create_task(step(i)) for i in range(OPERATIONS)]
        await asyncio.wait_for(asyncio.gather(*pending), WAIT_S * 3)
        on_nodes: dict[str, set[str]] = defaultdict(set)
        for sandbox_id, spec in node.running.items():
            if sandbox_id not in node.killed:
                assert spec.node_id is not None
                on_nodes[spec.node_id].add(sandbox_id)
        in_store: dict[str, set[str]] = defaultdict(set)
        final = await setup.nodes.loads()
        busy = [st.value for st in NODE_BUSY_STATES]
        async with setup.engine.connect() as conn:
            query = select(sandboxes.c.id, sandboxes.c.node_id).where(sandboxes.c.state.in_(busy))
            for sandbox_id, node_id in await conn.execute(query):
                in_store[node_id].add(sandbox_id)
        for node_id in NODES:
            load = final.get(NodeID(node_id))
            cpu, memory = (load.allocated_cpu, load.allocated_memory_mb) if load else (0, 0)
            peaks[node_id][0] = max(peaks[node_id][0], cpu)
            peaks[node_id][1] = max(peaks[node_id][1], memory)
        return dict(peaks), dict(on_nodes), dict(in_store), outcomes
    finally:
        for s in stores:
            await s.close()
        await setup.close()


@postgres_only
@pytest.mark.parametrize("seed", [11, 12])
def test_a_burst_of_creates_and_kills_never_overbooks_and_ends_exact(
    database_url: str, seed: int
) -> None:
    peaks, on_nodes, in_store, outcomes = asyncio.run(_burst(database_url, seed))
    for node_id, (cpu, memory) in peaks.items():
        capacity = NODES[node_id]
        assert cpu <= capacity[0] and memory <= capacity[1], (node_id, peaks)
    assert on_nodes == {n: ids for n, ids in in_store.items() if ids}
    assert sum(len(ids) for ids in in_store.values()) == outcomes["created"] - outcomes["killed"]
    assert outcomes["refused"] > 0  # the burst did fill the cluster
