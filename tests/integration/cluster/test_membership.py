"""Membership over the real wire (ADR 0019): nodes register through ``Registrar``, beat,
are drained and undrained, listed in ``GET /nodes``; a node of another version or with a
wrong token is refused with a message that says why. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from hutch.node.membership import Registrar, RegistrationRefused
from hutch.shared import clusterwire as wire
from tests.integration.cluster.conftest import TOKEN, ClusterApi, FakeNodeApi

Body = Callable[[], Awaitable[wire.RegisterNode]]


def _registrar(api: ClusterApi, body: Body, *,
               token: str = TOKEN) -> Registrar:  # fmt: skip
    # A dead URL first: the registrar moves on to the next api that answers.
    return Registrar(api_urls=["http://127.0.0.1:9", api.url], token=token, registration=body)


async def _register(api: ClusterApi, body: Body) -> wire.Lease:
    registrar = _registrar(api, body)
    try:
        return await registrar.register()
    finally:
        await registrar.aclose()


def test_register_list_drain_and_beat(
    cluster_api: ClusterApi, fake_nodes: Callable[..., FakeNodeApi]
) -> None:
    node_a, node_b = fake_nodes("node-a"), fake_nodes("node-b")
    lease = asyncio.run(_register(cluster_api, node_a.registration))
    assert (lease.node_id, lease.status) == ("node-a", "ready")
    assert lease.heartbeat_interval_s == pytest.approx(lease.lease_s / 3)
    asyncio.run(_register(cluster_api, node_b.registration))

    with cluster_api.admin() as admin:
        listed = admin.get("/nodes").json()
        assert [n["id"] for n in listed] == ["node-a", "node-b"]
        a = listed[0]
        assert a["status"] == "ready"
        assert a["address"] == node_a.address
        assert a["serviceInstanceID"] == a["bootID"] == "boot-1"
        assert a["metrics"]["cpuCount"] == 8
        assert a["metrics"]["memoryTotalBytes"] == 16384 << 20
        assert a["sandboxCount"] == 0 and a["labels"] == {"zone": "test"}
        detail = admin.get("/nodes/node-a").json()
        assert "sandboxStartingCount" not in detail and detail["id"] == "node-a"
        assert admin.get("/nodes/nope").status_code == 404

        # Drain: kept across a re-registration (an operator's decision); undrain.
        assert admin.post("/nodes/node-a", json={"status": "draining"}).status_code == 204
        assert admin.get("/nodes/node-a").json()["status"] == "draining"
        assert asyncio.run(_register(cluster_api, node_a.registration)).status == "draining"
        refused = admin.post("/nodes/node-a", json={"status": "lost"})
        assert refused.status_code == 400 and "lease" in refused.json()["message"]
        assert admin.post("/nodes/node-a", json={"status": "ready"}).status_code == 204
        assert admin.get("/nodes/node-a").json()["status"] == "ready"

    with cluster_api.member() as member:
        r = member.get("/nodes")
        assert r.status_code == 401 and "admin API key" in r.json()["message"]
        assert member.post("/nodes/node-a", json={"status": "draining"}).status_code == 401

    async def beats() -> tuple[wire.Lease, wire.Lease, int]:
        registrar = _registrar(cluster_api, node_a.registration)
        try:
            first = await registrar.register()
            second = await registrar.beat()
            return first, second, registrar.registrations
        finally:
            await registrar.aclose()

    first, second, registrations = asyncio.run(beats())
    assert second.lease_expires_at >= first.lease_expires_at
    assert registrations == 1  # the beat renewed the lease, no new registration

    # Another boot of node-a registers meanwhile: the old boot's beat is refused and the
    # registrar registers again.
    async def stale_boot() -> int:
        registrar = _registrar(cluster_api, node_a.registration)
        try:
            await registrar.register()
            await _register(cluster_api, lambda: node_a.registration(boot_id="boot-2"))
            await registrar.beat()
            return registrar.registrations
        finally:
            await registrar.aclose()

    assert asyncio.run(stale_boot()) == 2
    with cluster_api.admin() as admin:
        assert admin.get("/nodes/node-a").json()["bootID"] == "boot-1"


def test_incompatible_version_and_wrong_token_are_refused(
    cluster_api: ClusterApi, fake_nodes: Callable[..., FakeNodeApi]
) -> None:
    node = fake_nodes("node-old")
    with pytest.raises(RegistrationRefused) as refused:
        asyncio.run(_register(cluster_api, lambda: node.registration(version="0.0.9")))
    message = str(refused.value)
    assert "409" in message and "incompatible" in message and "0.0.9" in message
    with cluster_api.admin() as admin:
        assert admin.get("/nodes").json() == []

    async def wrong_token() -> None:
        registrar = _registrar(cluster_api, node.registration, token="not-the-token")
        try:
            await registrar.register()
        finally:
            await registrar.aclose()

    with pytest.raises(RegistrationRefused, match="401"):
        asyncio.run(wrong_token())
