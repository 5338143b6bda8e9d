"""Placement through the real api and wire (ADR 0019): creates spread over registered
nodes, every call goes to the sandbox's own node, a draining node takes none, a node that
refuses means the next one, and nothing fitting is infra's 503 naming each node."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from hutch.node.membership import Registrar
from hutch.shared.errors import ResourceExhaustedError
from tests.integration.cluster.conftest import TOKEN, ClusterApi, FakeNodeApi


def _join(api: ClusterApi, *nodes: FakeNodeApi) -> None:
    async def register() -> None:
        for node in nodes:
            registrar = Registrar(api_urls=[api.url], token=TOKEN, registration=node.registration)
            try:
                await registrar.register()
            finally:
                await registrar.aclose()

    asyncio.run(register())


def test_spread_route_drain_refuse_and_full(
    cluster_api: ClusterApi, fake_nodes: Callable[..., FakeNodeApi]
) -> None:
    a, b = fake_nodes("node-a", capacity=50), fake_nodes("node-b", capacity=50)
    _join(cluster_api, a, b)
    with cluster_api.member() as c, cluster_api.admin() as admin:
        ids = []
        for _ in range(6):
            r = c.post("/v2/sandboxes", json={"templateID": "base"})
            assert r.status_code == 201, r.text
            ids.append(r.json()["sandboxID"])
        # Least allocated first: 6 creates on 2 equal nodes end 3 and 3.
        assert (len(a.sandboxes.running), len(b.sandboxes.running)) == (3, 3)
        listed = {n["id"]: n for n in admin.get("/nodes").json()}
        assert listed["node-a"]["sandboxCount"] == listed["node-b"]["sandboxCount"] == 3
        assert listed["node-a"]["createSuccesses"] == 3
        assert listed["node-a"]["metrics"]["allocatedCPU"] > 0

        # Each call goes to the sandbox's own node.
        on_b = next(i for i in ids if i in b.sandboxes.running)
        assert c.delete(f"/sandboxes/{on_b}").status_code == 204
        assert on_b in b.sandboxes.killed and on_b not in a.sandboxes.killed

        # A draining node takes no new sandboxes; its own keep running.
        assert admin.post("/nodes/node-a", json={"status": "draining"}).status_code == 204
        for _ in range(2):
            assert c.post("/v2/sandboxes", json={"templateID": "base"}).status_code == 201
        assert (len(a.sandboxes.running), len(b.sandboxes.running)) == (3, 4)
        assert admin.post("/nodes/node-a", json={"status": "ready"}).status_code == 204

        # node-a (now the less loaded) refuses: the create lands on node-b.
        a.sandboxes.fail_next = ResourceExhaustedError("node full")
        r = c.post("/v2/sandboxes", json={"templateID": "base"})
        assert r.status_code == 201, r.text
        assert r.json()["sandboxID"] in b.sandboxes.running
        assert admin.get("/nodes/node-a").json()["createFails"] == 1

        # Nothing fits: 503 sandbox_capacity_unavailable naming every node's reason.
        assert admin.post("/nodes/node-a", json={"status": "draining"}).status_code == 204
        b.sandboxes.fail_next = ResourceExhaustedError("node full")
        r = c.post("/v2/sandboxes", json={"templateID": "base"})
        assert r.status_code == 503 and r.headers["Should-Retry"] == "true"
        body = r.json()
        assert body["error_code"] == "sandbox_capacity_unavailable"
        assert body["message"].startswith("Failed to place sandbox: not enough capacity")
        assert "node node-a: draining" in body["message"]
        assert "node node-b: refused" in body["message"]
        # The refused create left nothing behind on either node or in the listing.
        assert len(c.get("/v2/sandboxes").json()) == len(a.sandboxes.running) + len(
            b.sandboxes.running
        )
