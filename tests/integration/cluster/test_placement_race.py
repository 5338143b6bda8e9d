"""Concurrent creates through two api processes' services on one store never overbook a
node (ADR 0019): two ``SandboxService`` instances, each on its own engine (as two
``hutch api`` processes), race 60 creates for 2 nodes of 7 sandboxes each; the real
PostgreSQL of the store tests (and SQLite, whose single writer does the same)."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass

from hutch.api.models import NewTemplate, TemplateBuildState
from hutch.api.nodes_model import NodeCapacity, NodeRegistration
from hutch.api.service.placement import NoNodeFits, PlacementPolicy
from hutch.api.service.ports import PlacedSandbox, SandboxSpec
from hutch.api.service.sandboxes import CreateSandboxRequest, SandboxPolicy, SandboxService
from hutch.api.store.sql import SqlStore, open_sql_store
from hutch.shared.ids import NodeID
from tests.fakes.node import FakeNodeClient
from tests.integration.cluster.conftest import postgres_only

PER_NODE = 7
CREATES = 60


@dataclass
class PlacedFake(FakeNodeClient):
    """Accepts every create, answering from the node placement chose; slow enough that
    creates overlap."""

    async def create(self, spec: SandboxSpec) -> PlacedSandbox:
        await asyncio.sleep(0.01)
        placed = await super().create(spec)
        assert spec.node_id is not None
        return PlacedSandbox(sandbox_id=placed.sandbox_id, node_id=spec.node_id,
                             address=placed.address)  # fmt: skip


async def _service(url: str) -> tuple[SqlStore, SandboxService]:
    store = await open_sql_store(url)
    service = SandboxService(
        sandboxes=store.sandboxes, templates=store.templates, node=PlacedFake(),
        policy=SandboxPolicy(max_sandboxes_per_node=None),
        placement=PlacementPolicy(), node_stats=store.nodes,
    )  # fmt: skip
    return store, service


async def _race(url: str) -> tuple[Counter[str], int, dict[str, int]]:
    setup = await open_sql_store(url, migrate=True)
    team = await setup.teams.ensure_default_team()
    await setup.templates.create_template(
        NewTemplate(team_id=team.id, alias="base", build_state=TemplateBuildState.READY)
    )
    for name in ("node-a", "node-b"):
        await setup.nodes.register(
            NodeRegistration(
                node_id=NodeID(name), address=f"http://{name}", api_version="v1",
                version="0.1.0", boot_id="b",
                capacity=NodeCapacity(cpu_count=64, memory_mb=1 << 20, disk_mb=1,
                                      max_sandboxes=PER_NODE),
            ),
            lease_s=60,
        )  # fmt: skip
    one, two = await _service(url), await _service(url)
    services = [one[1], two[1]]

    async def create(i: int) -> str | None:
        try:
            sandbox = await services[i % 2].create_sandbox(
                team_id=team.id, request=CreateSandboxRequest(template="base")
            )
        except NoNodeFits:
            return None
        return sandbox.node_id

    try:
        placed = await asyncio.gather(*(create(i) for i in range(CREATES)))
        per_node = Counter(n for n in placed if n is not None)
        refused = sum(1 for n in placed if n is None)
        stored = {n: (await setup.nodes.loads())[NodeID(n)].sandboxes for n in per_node}
        return per_node, refused, stored
    finally:
        for store, _ in (one, two):
            await store.close()
        await setup.close()


@postgres_only
def test_concurrent_creates_through_two_apis_never_overbook(database_url: str) -> None:
    per_node, refused, stored = asyncio.run(_race(database_url))
    assert per_node == {"node-a": PER_NODE, "node-b": PER_NODE}
    assert stored == {"node-a": PER_NODE, "node-b": PER_NODE}
    assert refused == CREATES - 2 * PER_NODE
