"""A cluster api with no builder of its own (``ClusterTemplates``, issue 11) runs an image
import on a node chosen from the nodes table: a ready one with the most free disk (never a
draining or lost one, nor one without room for the template's disk), following its
progress, and names that node in its answer (the api records it as the holder). A node that
does not answer mid-import is dropped and the import runs on the next one; an image error
is the image's and is not retried elsewhere. Fake node clients (a unit test of the choice);
the real path is tests/cluster/test_artifacts.py's import test."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime

import pytest

from hutch.api.nodes.router import ClusterTemplates, NodeRouter
from hutch.api.nodes_model import Node, NodeCapacity, NodeStatus, NodeUsage
from hutch.api.service.ports import ImageImport, ImportedImage, ImportProgress
from hutch.shared.errors import ImageError, UnavailableError
from hutch.shared.ids import NodeID

NOW = datetime(2026, 1, 1, tzinfo=UTC)


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


class FakeNode:
    def __init__(self, node_id: str, fail: Exception | None = None, *, hang: bool = False) -> None:
        self.node_id, self.fail, self.runs, self.hang = node_id, fail, 0, hang
        self.started, self.cancelled = asyncio.Event(), False

    async def import_image(
        self, request: ImageImport, *, progress: ImportProgress | None = None
    ) -> ImportedImage:
        self.runs += 1
        if progress is not None:
            progress("layer 1/1", 1, 2)
        self.started.set()
        if self.hang:  # a frozen node: the stream stays open and silent
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled = True
                raise
        if self.fail is not None:
            raise self.fail
        return ImportedImage(name=request.name, fingerprint="f" * 64, cache_hit=False,
                             envd_injected=False, envd_sha256=None)  # fmt: skip


class Clients:
    def __init__(self, nodes: dict[str, FakeNode]) -> None:
        self.nodes, self.forgotten = nodes, []  # type: list[str]

    async def client(self, node_id: NodeID) -> FakeNode:
        return self.nodes[node_id]

    async def forget(self, node_id: NodeID) -> None:
        self.forgotten.append(node_id)


def _templates(rows: list[Node], clients: Clients, *, watch_s: float = 2.0) -> ClusterTemplates:
    async def list_nodes() -> list[Node]:
        return list(rows)

    async def find(_: object) -> None:
        return None

    router = NodeRouter(clients=clients, find_sandbox=find, list_nodes=list_nodes)  # type: ignore[arg-type]
    return ClusterTemplates(router, watch_s=watch_s)


REQUEST = ImageImport(source="docker-archive:/x.tar", name="img", disk_mb=3000)


async def test_the_ready_node_with_most_free_disk_imports_and_is_named() -> None:
    nodes = {n: FakeNode(n) for n in ("n1", "n2", "n3", "n4", "n5")}
    rows = [
        _node("n1", used=9000),  # 1000 MB free: no room for 3000
        _node("n2", used=2000),
        _node("n3", used=1000, status=NodeStatus.DRAINING),
        _node("n4", status=NodeStatus.LOST),
        _node("n5", used=4000),
    ]
    seen: list[tuple[str, int, int]] = []
    made = await _templates(rows, Clients(nodes)).import_image(
        REQUEST, progress=lambda *a: seen.append(a)
    )
    assert made.node_id == "n2" and made.name == "img"
    assert seen == [("layer 1/1", 1, 2)]
    assert [n for n, f in nodes.items() if f.runs] == ["n2"]


async def test_a_node_that_does_not_answer_is_dropped_and_the_next_imports() -> None:
    nodes = {"n1": FakeNode("n1", UnavailableError("node n1 did not answer")),
             "n2": FakeNode("n2")}  # fmt: skip
    clients = Clients(nodes)
    rows = [_node("n1"), _node("n2", used=100)]
    made = await _templates(rows, clients).import_image(REQUEST)
    assert made.node_id == "n2"
    assert clients.forgotten == ["n1"]


async def test_an_image_error_is_not_retried_and_no_node_is_a_clear_503() -> None:
    nodes = {"n1": FakeNode("n1", ImageError("bad image", public_message="bad image")),
             "n2": FakeNode("n2")}  # fmt: skip
    rows = [_node("n1"), _node("n2", used=100)]
    with pytest.raises(ImageError):
        await _templates(rows, Clients(nodes)).import_image(REQUEST)
    assert nodes["n2"].runs == 0
    with pytest.raises(UnavailableError, match="no ready node with free disk"):
        await _templates([_node("n1", status=NodeStatus.DRAINING)], Clients(nodes)).import_image(
            REQUEST
        )
    down = {"n1": FakeNode("n1", UnavailableError("gone"))}
    with pytest.raises(UnavailableError, match="no node could import the image"):
        await _templates([_node("n1")], Clients(down)).import_image(REQUEST)


async def test_a_node_lost_mid_import_with_its_stream_open_is_given_up_for_the_next() -> None:
    nodes = {"n1": FakeNode("n1", hang=True), "n2": FakeNode("n2")}
    rows = [_node("n1"), _node("n2", used=100)]
    templates = _templates(rows, Clients(nodes), watch_s=0.01)
    running = asyncio.create_task(templates.import_image(REQUEST))
    await nodes["n1"].started.wait()
    assert not running.done()  # a draining or slow node is waited for
    rows[0] = dataclasses.replace(rows[0], status=NodeStatus.LOST)  # the sweeper's verdict
    made = await running
    assert made.node_id == "n2"
    assert nodes["n1"].cancelled and nodes["n2"].runs == 1
