"""Where a local volume lives (ADR 0034), as logic: ``ClusterVolumeHosts`` puts a new volume
on the ready node with the most free disk and refuses lost or unknown nodes; a node that
does not answer drops its client; ``VolumeService`` records the node with the row, sends
every call about the volume there, answers 503 ``volume_node_unavailable`` naming the
volume and the node when it cannot, keeps the volume when a delete cannot reach its node,
and lets a volume made before volumes had nodes be claimed once. Fakes for the nodes and
the store (the real ones: tests/integration/cluster/test_volume_node.py and
tests/cluster/test_cluster.py)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from hutch.api.models import Team, Volume
from hutch.api.nodes.volumes import ClusterVolumeHosts
from hutch.api.nodes_model import Node, NodeCapacity, NodeStatus, NodeUsage
from hutch.api.service.volumes import VolumePolicy, VolumeService
from hutch.shared.errors import ConflictError, NotFoundError, UnavailableError
from hutch.shared.ids import NodeID, TeamID, VolumeID
from hutch.volumes.base import Usage

NOW = datetime(2026, 1, 1, tzinfo=UTC)
TEAM = Team(id=TeamID("team1"), name="t", created_at=NOW)


def _node(node_id: str, *, status: NodeStatus = NodeStatus.READY, disk: int = 10_000,
          used: int = 0) -> Node:  # fmt: skip
    return Node(
        id=NodeID(node_id), address=f"http://{node_id}", api_version="1", version="1",
        boot_id="b", capacity=NodeCapacity(cpu_count=4, memory_mb=4096, disk_mb=disk,
                                           max_sandboxes=10),
        labels={}, usage=NodeUsage(disk_used_mb=used), status=status,
        status_changed_at=NOW, lost_reason=None, registered_at=NOW, heartbeat_at=NOW,
        lease_expires_at=NOW,
    )  # fmt: skip


class FakeVolumes:
    """One node's volumes: a dict; ``down`` makes every call a transport failure."""

    name = "local"
    mountable = True

    def __init__(self) -> None:
        self.made: dict[str, int] = {}
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise UnavailableError("GET /volumes: node unreachable: ConnectError")

    async def capacity_bytes(self) -> int:
        self._check()
        return 1 << 30

    async def create(self, volume_id: str, *, quota_bytes: int) -> None:
        self._check()
        self.made[volume_id] = quota_bytes

    async def delete(self, volume_id: str) -> None:
        self._check()
        self.made.pop(volume_id, None)

    async def usage(self, volume_id: str) -> Usage:
        self._check()
        if volume_id not in self.made:
            raise NotFoundError(f"volume {volume_id}: no image here")
        return Usage(used_bytes=1, total_bytes=self.made[volume_id])


class FakeClient:
    def __init__(self, volumes: FakeVolumes) -> None:
        self.volumes = volumes


class FakeClients:
    def __init__(self, nodes: dict[str, FakeVolumes]) -> None:
        self.nodes = nodes
        self.forgotten: list[str] = []

    async def client(self, node_id: NodeID) -> FakeClient:
        return FakeClient(self.nodes[node_id])

    async def forget(self, node_id: NodeID) -> None:
        self.forgotten.append(node_id)


class FakeStore:
    """The ``VolumeStore`` calls the service makes, over a dict."""

    def __init__(self) -> None:
        self.rows: dict[str, Volume] = {}
        self.mounting: dict[str, list[str]] = {}

    async def create_volume(self, *, volume_id: VolumeID, team_id: TeamID, name: str,
                            quota_bytes: int, backend: str, token_secret: str,
                            max_total_bytes: int | None = None,
                            node_id: str | None = None) -> Volume:  # fmt: skip
        vol = Volume(id=volume_id, team_id=team_id, name=name, quota_bytes=quota_bytes,
                     backend=backend, token_secret=token_secret, created_at=NOW,
                     node_id=node_id)  # fmt: skip
        self.rows[vol.id] = vol
        return vol

    async def get_volume(self, id_or_name: str, *, team_id: TeamID | None) -> Volume:
        for vol in self.rows.values():
            if id_or_name in (vol.id, vol.name):
                return vol
        raise NotFoundError(f"volume {id_or_name} not found")

    async def delete_volume(self, volume_id: VolumeID, *, team_id: TeamID) -> None:
        del self.rows[volume_id]

    async def mounting_sandboxes(self, volume_id: VolumeID) -> list[str]:
        return self.mounting.get(volume_id, [])

    async def claim_volume_node(self, volume_id: VolumeID, node_id: str) -> NodeID:
        vol = self.rows[volume_id]
        if vol.node_id is None:
            self.rows[volume_id] = vol = dataclasses.replace(vol, node_id=node_id)
        return NodeID(vol.node_id or "")


def _world(*nodes: Node) -> tuple[VolumeService, FakeStore, dict[str, FakeVolumes], FakeClients]:
    volumes = {n.id: FakeVolumes() for n in nodes}
    clients = FakeClients(volumes)
    listed = list(nodes)

    async def list_nodes() -> list[Node]:
        return listed

    async def get_node(node_id: NodeID) -> Node:
        for node in listed:
            if node.id == node_id:
                return node
        raise NotFoundError(f"node {node_id} not found")

    hosts = ClusterVolumeHosts(clients=clients, list_nodes=list_nodes, get_node=get_node)
    store = FakeStore()
    service = VolumeService(
        volumes=store,  # type: ignore[arg-type]  # the calls it makes
        backends={}, policy=VolumePolicy(backend="local"), hosts=hosts,
    )  # fmt: skip
    return service, store, volumes, clients


async def test_a_new_volume_goes_to_the_ready_node_with_the_most_free_disk() -> None:
    service, store, volumes, _ = _world(
        _node("n1", disk=10_000, used=9_000),
        _node("n2", disk=10_000, used=2_000),
        _node("n3", disk=50_000, status=NodeStatus.DRAINING),
        _node("n4", disk=90_000, status=NodeStatus.LOST),
    )
    vol = await service.create(team=TEAM, name="data", size_mb=8)
    assert vol.node_id == "n2" and store.rows[vol.id].node_id == "n2"
    assert volumes["n2"].made == {vol.id: 8 << 20}
    assert not volumes["n1"].made and not volumes["n3"].made and not volumes["n4"].made
    assert (await service.usage(vol)).total_bytes == 8 << 20


async def test_no_ready_node_is_a_503_and_no_row() -> None:
    service, store, _, _ = _world(_node("n1", status=NodeStatus.DRAINING))
    with pytest.raises(UnavailableError) as no:
        await service.create(team=TEAM, name="data", size_mb=8)
    assert no.value.error_code == "volume_node_unavailable"
    assert not store.rows


async def test_a_node_down_is_a_503_naming_the_volume_and_node_and_a_delete_keeps_it() -> None:
    service, store, volumes, clients = _world(_node("n1"))
    vol = await service.create(team=TEAM, name="data", size_mb=8)
    volumes["n1"].down = True
    with pytest.raises(UnavailableError) as no:
        await service.usage(vol)
    assert no.value.error_code == "volume_node_unavailable"
    assert f"'data' ({vol.id}) lives on node n1" in no.value.public_message
    assert clients.forgotten == ["n1"]  # the next call connects again from the row
    assert await service.usage_if_reachable(vol) is None  # GET /volumes/{id} still answers
    with pytest.raises(UnavailableError, match="lives on node n1"):
        await service.delete(team_id=TEAM.id, id_or_name="data")
    assert vol.id in store.rows  # kept, to be deleted when its node is back
    volumes["n1"].down = False
    await service.delete(team_id=TEAM.id, id_or_name="data")
    assert not store.rows and not volumes["n1"].made


async def test_a_volume_in_use_is_409_before_its_node_is_asked() -> None:
    service, store, volumes, _ = _world(_node("n1"))
    vol = await service.create(team=TEAM, name="data", size_mb=8)
    store.mounting[vol.id] = ["sbx1"]
    volumes["n1"].down = True
    with pytest.raises(ConflictError, match="sbx1"):
        await service.delete(team_id=TEAM.id, id_or_name="data")


async def test_a_lost_or_unknown_node_is_a_503_without_asking_it() -> None:
    lost = _node("n1", status=NodeStatus.LOST)
    service, store, _, _ = _world(lost, _node("n2"))
    for node in ("n1", "gone"):
        vol = await store.create_volume(
            volume_id=VolumeID(f"vol{node:0>20}"), team_id=TEAM.id, name=f"v{node}",
            quota_bytes=1, backend="local", token_secret="s", node_id=node,
        )  # fmt: skip
        with pytest.raises(UnavailableError) as no:
            await service.usage(vol)
        assert no.value.error_code == "volume_node_unavailable"
        assert f"lives on node {node}" in no.value.message


async def test_a_volume_made_before_volumes_had_nodes_is_claimed_once() -> None:
    service, store, volumes, _ = _world(_node("n1"))
    vol = await store.create_volume(
        volume_id=VolumeID("vol00000000000000000001"), team_id=TEAM.id, name="old",
        quota_bytes=8, backend="local", token_secret="s",
    )  # fmt: skip
    volumes["n1"].made[vol.id] = 8
    assert (await service.usage(vol)).total_bytes == 8
    assert store.rows[vol.id].node_id == "n1"
