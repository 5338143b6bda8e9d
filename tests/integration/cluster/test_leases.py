"""Leases (ADR 0025): a node that stops beating is skipped by placement once its lease
ends, and after the grace is marked ``lost`` with its sandboxes reported killed (the
reason in their logs); one that comes back within the grace with the same boot id gets its
sandboxes adopted, with a new boot id they are cleaned up; the sweep is a compare-and-set,
so sweepers in every api mark a node lost once. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hutch.api.nodes_model import NodeCapacity, NodeRegistration, NodeStatus
from hutch.api.service.leases import LostNodeSweeper
from hutch.api.service.routing import NoRoutes
from hutch.api.store.sql import open_sql_store
from hutch.node.membership import Registrar
from hutch.shared import clusterwire as wire
from hutch.shared.ids import NodeID
from tests.integration.cluster.conftest import (
    TOKEN,
    ClusterApi,
    FakeNodeApi,
    beating,
    postgres_only,
    serve_api,
    wait_for,
)


def _register(api: ClusterApi, node: FakeNodeApi, *, boot_id: str = "boot-1") -> wire.Lease:
    async def go() -> wire.Lease:
        registrar = Registrar(
            api_urls=[api.url], token=TOKEN,
            registration=lambda: node.registration(boot_id=boot_id),
        )  # fmt: skip
        try:
            return await registrar.register()
        finally:
            await registrar.aclose()

    return asyncio.run(go())


@pytest.fixture
def short_lease_api(database_url: str, tmp_path: Path) -> Iterator[ClusterApi]:
    """Leases of 1 s, lost 1.5 s later, swept every 0.2 s."""
    yield from serve_api(
        database_url, tmp_path, cluster_lease_s=1.0, cluster_lost_grace_s=1.5,
        cluster_sweep_interval_s=0.2,
    )  # fmt: skip


@pytest.fixture
def long_grace_api(database_url: str, tmp_path: Path) -> Iterator[ClusterApi]:
    """Leases of 1 s, a grace of 10 minutes (never swept in the test)."""
    yield from serve_api(
        database_url, tmp_path, cluster_lease_s=1.0, cluster_lost_grace_s=600,
        cluster_sweep_interval_s=0.2,
    )  # fmt: skip


def _create(api: ClusterApi, n: int) -> list[str]:
    with api.member() as c:
        ids = []
        for _ in range(n):
            r = c.post("/v2/sandboxes", json={"templateID": "base"})
            assert r.status_code == 201, r.text
            ids.append(r.json()["sandboxID"])
        return ids


def test_silent_node_is_lost_after_the_grace_and_cleaned_when_back(
    short_lease_api: ClusterApi, fake_nodes: Callable[..., FakeNodeApi]
) -> None:
    api = short_lease_api
    node = fake_nodes("node-a")
    with beating(api.url, node):
        ids = _create(api, 2)
    # The node has gone silent.
    with api.admin() as admin, api.member() as c:
        lost = wait_for(
            lambda: (n := admin.get("/nodes/node-a").json())["status"] == "lost" and n,
            what="node-a lost",
        )
        assert "no heartbeat" in lost["lostReason"]  # type: ignore[index]
        assert lost["sandboxCount"] == 0  # type: ignore[index]
        for sid in ids:
            assert c.get(f"/sandboxes/{sid}").status_code == 404
            logs = c.get(f"/v2/sandboxes/{sid}/logs").json()["logs"]
            assert "sandbox killed: node node-a lost: no heartbeat" in logs[-1]["message"]
        # Nothing fits meanwhile: the only node is lost.
        r = c.post("/v2/sandboxes", json={"templateID": "base"})
        assert r.status_code == 503 and "node node-a: lost" in r.json()["message"]
        # It comes back (same boot): ready again, and its reconcile destroyed the
        # sandboxes the store reported killed: no id runs anywhere.
        lease = _register(api, node)
        assert admin.get("/nodes/node-a").json()["status"] == "ready"
        assert node.sandboxes.running == {}
        assert sorted(lease.removed) == sorted(ids) and lease.adopted == []


def test_back_within_the_grace_same_boot_adopts_new_boot_cleans(
    long_grace_api: ClusterApi, fake_nodes: Callable[..., FakeNodeApi]
) -> None:
    api = long_grace_api
    a, b = fake_nodes("node-a"), fake_nodes("node-b")
    with beating(api.url, a):
        first = _create(api, 2)
    with beating(api.url, b, boot_id="b-1"), api.member() as c, api.admin() as admin:
        # Once node-a's lease has ended, placement passes it by (node-b takes the create).
        def placed_on_b() -> bool:
            r = c.post("/v2/sandboxes", json={"templateID": "base"})
            assert r.status_code == 201, r.text
            if r.json()["sandboxID"] in b.sandboxes.running and len(a.sandboxes.running) == 2:
                return admin.get("/nodes/node-b").json()["sandboxCount"] >= 2
            return False

        wait_for(placed_on_b, what="node-a passed by once its lease ended")
        assert admin.get("/nodes/node-a").json()["status"] == "ready"  # within the grace
        # Back with the same boot id: adopted, nothing killed.
        _register(api, a)
        for sid in first:
            assert c.get(f"/sandboxes/{sid}").status_code == 200
        assert sorted(a.sandboxes.running) == sorted(first)
        # Back with a new boot id: its sandboxes are cleaned up and reported killed.
        _register(api, a, boot_id="boot-2")
        assert a.sandboxes.running == {}
        for sid in first:
            assert c.get(f"/sandboxes/{sid}").status_code == 404
            logs = c.get(f"/v2/sandboxes/{sid}/logs").json()["logs"]
            assert "came back with a new boot id" in logs[-1]["message"]
        # node-b's sandboxes were never touched.
        assert len(b.sandboxes.running) >= 1 and not b.sandboxes.killed


@postgres_only
def test_sweepers_in_two_apis_mark_a_node_lost_once(database_url: str) -> None:
    async def race() -> list[list[tuple[NodeID, list[str]]]]:
        one = await open_sql_store(database_url, migrate=True)
        two = await open_sql_store(database_url)
        try:
            await one.nodes.register(
                NodeRegistration(
                    node_id=NodeID("n"), address="http://n", api_version="v1", version="0.1.0",
                    boot_id="b", capacity=NodeCapacity(cpu_count=1, memory_mb=1, disk_mb=1,
                                                       max_sandboxes=1),
                ),
                lease_s=0.01,
            )  # fmt: skip
            await asyncio.sleep(0.1)
            sweepers = [
                LostNodeSweeper(
                    nodes=s.nodes,
                    routes=NoRoutes(),
                    grace_s=0.05,
                    interval_s=1,
                )
                for s in (one, two)
                for _ in range(3)
            ]
            results = await asyncio.gather(*(s.sweep_once() for s in sweepers))
            assert (await one.nodes.get_node(NodeID("n"))).status is NodeStatus.LOST
            return [list(r) for r in results]  # type: ignore[misc]
        finally:
            await one.close()
            await two.close()

    results = asyncio.run(race())
    assert sum(len(r) for r in results) == 1
