"""Creates ranked from an api's copy of the nodes (ADR 0035) place exactly as if they read
the store, because the locked check in the transaction decides.

Two stores on one database play two api processes: ``placer`` creates (its copy read
once, then stale), ``other`` changes the nodes behind its back. A node drained or
expired since the copy was read is never placed on (the check refuses it, the create
goes on to another node, and the copy learns the row); a copy that says nothing fits is
read again before the create answers so (a kill or a registration through the other
api makes room); a drain through the same store is seen at once. On PostgreSQL, the
creates of one process for one node queue on that process's lock of it: one transaction
per process waits for the node's advisory lock, not all of them.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import text, update

from hutch.api.models import NewSandbox, NewTemplate, TemplateBuildState
from hutch.api.nodes_model import NodeCapacity, NodeRegistration, NodeStatus
from hutch.api.service.placement import Demand, NoNodeFits, Placement, PlacementPolicy
from hutch.api.store.engine import write_transaction
from hutch.api.store.placement import reserve_node
from hutch.api.store.sql import SqlStore, open_sql_store
from hutch.api.store.tables import nodes
from hutch.shared.ids import NodeID, TeamID, TemplateID
from tests.integration.cluster.conftest import postgres_only

EXACT = PlacementPolicy(cpu_overcommit=1.0, memory_overcommit=1.0)
SMALL = Placement(demand=Demand(cpu_count=1, memory_mb=512), policy=EXACT)
WAIT_S = 60.0  # a deadline for waiting on a condition, never an assertion on time


async def _stale_store(url: str) -> SqlStore:
    """A store whose copy of the nodes never ages: only invalidation, learning and a
    create that finds nothing fitting read it again (so the test never races the clock)."""
    store = await open_sql_store(url)
    store.sandboxes.view.max_age_s = float("inf")
    return store


async def _register(store: SqlStore, node_id: str, most: int) -> None:
    await store.nodes.register(
        NodeRegistration(
            node_id=NodeID(node_id), address=f"http://{node_id}", api_version="v1",
            version="0.1.0", boot_id="b",
            capacity=NodeCapacity(cpu_count=16, memory_mb=16384, disk_mb=1, max_sandboxes=most),
        ),
        lease_s=600,
    )  # fmt: skip


async def _setup(url: str, capacities: dict[str, int]) -> tuple[SqlStore, TeamID, TemplateID]:
    store = await open_sql_store(url, migrate=True)
    team = await store.teams.ensure_default_team()
    template = await store.templates.create_template(
        NewTemplate(team_id=team.id, alias="small", build_state=TemplateBuildState.READY,
                    cpu_count=1, memory_mb=512)
    )  # fmt: skip
    for node_id, most in capacities.items():
        await _register(store, node_id, most)
    return store, team.id, template.id


def _row(team: TeamID, template: TemplateID) -> NewSandbox:
    now = datetime.now(UTC)
    return NewSandbox(
        team_id=team, template_id=template, started_at=now, end_at=now + timedelta(hours=1),
        envd_version="0.6.13", cpu_count=1, memory_mb=512, disk_mb=512,
    )  # fmt: skip


async def _place(store: SqlStore, team: TeamID, template: TemplateID) -> str | None:
    created = await store.sandboxes.create_sandbox(_row(team, template), placer=SMALL)
    return created.sandbox.node_id


async def _stale_copy_never_places_on_a_drained_or_expired_node(url: str) -> list[object]:
    other, team, template = await _setup(url, {"node-a": 10, "node-b": 10, "node-c": 10})
    placer = await _stale_store(url)
    try:
        seen: list[object] = [await _place(placer, team, template)]  # its copy: all ready
        reads = placer.sandboxes.view.reads
        # Behind the copy's back: node-b is drained, node-a's lease ends.
        await other.nodes.set_status(
            NodeID("node-b"), new=NodeStatus.DRAINING, expected={NodeStatus.READY}
        )
        async with write_transaction(other.engine) as conn:
            past = datetime.now(UTC) - timedelta(minutes=5)
            await conn.execute(
                update(nodes).where(nodes.c.id == "node-a").values(lease_expires_at=past)
            )
        seen += [await _place(placer, team, template) for _ in range(4)]
        seen.append(placer.sandboxes.view.reads - reads)  # the copy was not read again
        return seen
    finally:
        await placer.close()
        await other.close()


def test_a_stale_copy_never_places_on_a_drained_or_expired_node(database_url: str) -> None:
    *placed, reads = asyncio.run(
        _stale_copy_never_places_on_a_drained_or_expired_node(database_url)
    )
    assert placed[0] == "node-a"  # the best (ties by id)
    # node-a (expired) and node-b (drained) were refused by the check and learnt: node-c.
    assert placed[1:] == ["node-c"] * 4
    assert reads == 0  # the copy learnt from the checks, it did not need a read


async def _a_drain_through_the_same_store_is_seen_at_once(url: str) -> tuple[str | None, int]:
    store, team, template = await _setup(url, {"node-a": 10, "node-b": 10})
    store.sandboxes.view.max_age_s = float("inf")
    try:
        assert await _place(store, team, template) == "node-a"
        await store.nodes.set_status(
            NodeID("node-a"), new=NodeStatus.DRAINING, expected={NodeStatus.READY}
        )
        # The copy knows: node-a is not even tried (no refusal, no retry).
        candidates = {c.node.id: c.node.status for c in await _candidates(store)}
        return await _place(store, team, template), len(
            [n for n, s in candidates.items() if s is NodeStatus.DRAINING]
        )
    finally:
        await store.close()


async def _candidates(store: SqlStore) -> list:  # type: ignore[type-arg]
    async with store.engine.connect() as conn:
        return await store.sandboxes.view.candidates(conn)


def test_a_drain_through_the_same_store_is_seen_at_once(database_url: str) -> None:
    placed, draining = asyncio.run(_a_drain_through_the_same_store_is_seen_at_once(database_url))
    assert placed == "node-b"
    assert draining == 1


async def _a_full_copy_is_read_again_before_answering(url: str) -> list[object]:
    other, team, template = await _setup(url, {"node-a": 1})
    placer = await _stale_store(url)
    try:
        first = await placer.sandboxes.create_sandbox(_row(team, template), placer=SMALL)
        outcomes: list[object] = [first.sandbox.node_id]
        try:
            await _place(placer, team, template)
        except NoNodeFits as exc:
            outcomes.append(dict(exc.reasons))
        # Room made through the other api: a kill, and a new node.
        await other.sandboxes.delete_sandbox(first.sandbox.id, team_id=None)
        outcomes.append(await _place(placer, team, template))  # its copy still says full
        await _register(other, "node-b", 5)
        outcomes.append(await _place(placer, team, template))  # node-a full again
        return outcomes
    finally:
        await placer.close()
        await other.close()


def test_a_copy_that_says_nothing_fits_is_read_again_before_answering(database_url: str) -> None:
    outcomes = asyncio.run(_a_full_copy_is_read_again_before_answering(database_url))
    assert outcomes == [
        "node-a",
        {"node-a": "runs 1 sandboxes, its limit is 1"},
        "node-a",
        "node-b",
    ]


async def _one_advisory_waiter_per_process(url: str, creates: int) -> tuple[int, int, list]:  # type: ignore[type-arg]
    holder, team, template = await _setup(url, {"only": 100})
    placer = await open_sql_store(url)
    try:
        async with write_transaction(holder.engine) as conn:
            assert await reserve_node(conn, SMALL) == "only"  # another api holds the node
            pending = [asyncio.create_task(_place(placer, team, template)) for _ in range(creates)]
            local = placer.sandboxes.view.lock(NodeID("only"))
            deadline = asyncio.get_running_loop().time() + WAIT_S
            while True:  # every create waiting: one on the advisory lock, the rest here
                waiters = await _lock_waiters(holder)
                queued = len(getattr(local, "_waiters", None) or ())
                if waiters >= 1 and queued == creates - 1:
                    break
                assert not any(t.done() for t in pending), pending
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.01)
            waiters = await _lock_waiters(holder)
            await conn.execute(text("SELECT 1"))
        placed = await asyncio.wait_for(asyncio.gather(*pending), WAIT_S)
        return waiters, queued, placed
    finally:
        await placer.close()
        await holder.close()


async def _lock_waiters(store: SqlStore) -> int:
    async with store.engine.connect() as probe:
        query = text(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return int((await probe.execute(query)).scalar_one())


@postgres_only
def test_a_process_queues_its_creates_for_a_node_on_its_own_lock(database_url: str) -> None:
    waiters, queued, placed = asyncio.run(_one_advisory_waiter_per_process(database_url, 6))
    assert waiters == 1  # one transaction of the process waits for the advisory lock
    assert queued == 5  # the others wait in the process, holding no database lock
    assert placed == ["only"] * 6
