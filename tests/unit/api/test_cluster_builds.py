"""SDK builds on a cluster api whose nodes register (``ClusterBuilds``, issue 11): the
uploaded archives are kept in the store until the build is placed; the build runs on a
ready node with the most free disk (never a draining or lost one), which is first given
each ``COPY`` archive it lacks and the ``fromTemplate`` base (fetched from the node that
holds it); its log lines come back as the node streams them, and the node that built it
is the answer (recorded as the holder). A node that does not answer while being prepared
is dropped and the next one builds; once a build has started it is never run again
elsewhere (a failing or lost node fails it). Fake node clients (a unit test of the
choice); the real path is tests/cluster/test_builds.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

import pytest

from hutch.api.nodes.builds import ClusterBuilds, base_of, files_of
from hutch.api.nodes.router import NodeRouter
from hutch.api.nodes_model import Node, NodeStatus
from hutch.api.service.artifacts import ArtifactService
from hutch.api.service.ports import BuildFailedError
from hutch.shared.errors import UnavailableError
from hutch.shared.ids import NodeID
from tests.unit.api.test_cluster_imports import _node

START = {
    "fromTemplate": "base@b1",
    "steps": [
        {"type": "COPY", "args": ["a", "/a"], "filesHash": "h1"},
        {"type": "RUN", "args": ["true"]},
        {"type": "COPY", "args": ["b", "/b"], "filesHash": "h2"},
        {"type": "COPY", "args": ["a", "/c"], "filesHash": "h1"},
    ],
}


class FakeNode:
    def __init__(self, node_id: str, *, fail_prepare: bool = False,
                 fail_build: Exception | None = None, hang: bool = False) -> None:  # fmt: skip
        self.node_id = node_id
        self.fail_prepare, self.fail_build, self.hang = fail_prepare, fail_build, hang
        self.files: dict[str, bytes] = {}
        self.fetched: list[tuple[str, tuple[str, ...]]] = []
        self.builds = 0
        self.cancelled = False

    async def has_files(self, files_hash: str) -> bool:
        if self.fail_prepare:
            raise UnavailableError(f"node {self.node_id} did not answer")
        return files_hash in self.files

    async def store_files(self, files_hash: str, chunks: AsyncIterator[bytes]) -> None:
        self.files[files_hash] = b"".join([c async for c in chunks])

    async def fetch_artifact(self, name: str, sources: Sequence[str]) -> bool:
        self.fetched.append((name, tuple(sources)))
        return True

    async def run_build(self, name: str, start: Mapping[str, object], *, cpu_count: float,
                        memory_mb: int, log: object, build_id: str) -> None:  # fmt: skip
        self.builds += 1
        log("info", f"step on {self.node_id}", "0")  # type: ignore[operator]
        if self.hang:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled = True
                raise
        if self.fail_build is not None:
            raise self.fail_build


class Clients:
    def __init__(self, nodes: dict[str, FakeNode]) -> None:
        self.nodes, self.forgotten = nodes, []  # type: list[str]

    async def client(self, node_id: NodeID) -> FakeNode:
        return self.nodes[node_id]

    async def forget(self, node_id: NodeID) -> None:
        self.forgotten.append(node_id)


class Files:
    def __init__(self) -> None:
        self.kept: dict[str, bytes] = {}

    async def has(self, files_hash: str) -> bool:
        return files_hash in self.kept

    async def put(self, files_hash: str, chunks: AsyncIterator[bytes]) -> int:
        self.kept[files_hash] = b"".join([c async for c in chunks])
        return len(self.kept[files_hash])

    async def read(self, files_hash: str) -> AsyncIterator[bytes]:
        data = self.kept[files_hash]
        for i in range(0, len(data), 3):
            yield data[i : i + 3]


@dataclass
class Holder:
    node_id: NodeID
    state: str
    address: str
    live: bool = True


class Holdings:
    def __init__(self, held: dict[str, list[str]]) -> None:
        self.held = held
        self.recorded: list[tuple[str, str]] = []

    async def holders(self, artifact: str) -> list[Holder]:
        return [Holder(NodeID(n), "held", f"http://{n}") for n in self.held.get(artifact, [])]

    async def holds(self, artifact: str, node_id: NodeID) -> bool:
        return node_id in self.held.get(artifact, [])

    async def record(self, artifact: str, node_id: NodeID) -> None:
        self.recorded.append((artifact, node_id))


def _builds(rows: list[Node], clients: Clients, files: Files, holdings: Holdings,
            *, watch_s: float = 2.0) -> ClusterBuilds:  # fmt: skip
    async def list_nodes() -> list[Node]:
        return list(rows)

    async def find(_: object) -> None:
        return None

    router = NodeRouter(clients=clients, find_sandbox=find, list_nodes=list_nodes)  # type: ignore[arg-type]
    return ClusterBuilds(router, files=files, artifacts=ArtifactService(holdings),  # type: ignore[arg-type]
                         watch_s=watch_s)  # fmt: skip


async def _kept(files: Files) -> Files:
    async def one(data: bytes) -> AsyncIterator[bytes]:
        yield data

    await files.put("h1", one(b"archive-one"))
    await files.put("h2", one(b"archive-two"))
    return files


async def _run(builds: ClusterBuilds, lines: list[tuple[str, str, str | None]]) -> NodeID:
    def log(level: str, message: str, step: str | None = None) -> None:
        lines.append((level, message, step))

    return await builds.run_build("tpl", START, cpu_count=1, memory_mb=512, log=log,
                                  build_id="b2")  # fmt: skip


def test_the_archives_and_base_a_start_names() -> None:
    assert files_of(START) == ["h1", "h2"]
    assert base_of(START) == "base@b1"
    assert base_of({"fromTemplate": "busybox:latest"}) == "busybox"
    assert files_of({"steps": "nonsense"}) == [] and base_of({}) is None


async def test_uploads_are_kept_and_answered_by_the_store_not_a_node() -> None:
    nodes = {"n1": FakeNode("n1")}
    files = Files()
    builds = _builds([_node("n1")], Clients(nodes), files, Holdings({}))
    assert not await builds.has_files("h1")

    async def body() -> AsyncIterator[bytes]:
        yield b"ab"
        yield b"cd"

    await builds.store_files("h1", body())
    assert await builds.has_files("h1") and files.kept["h1"] == b"abcd"
    assert nodes["n1"].files == {}  # no node until the build is placed


async def test_the_ready_node_with_most_free_disk_gets_files_and_base_then_builds() -> None:
    nodes = {n: FakeNode(n) for n in ("n1", "n2", "n3", "n4")}
    nodes["n2"].files["h2"] = b"already there"
    rows = [
        _node("n1", used=5000),
        _node("n2", used=1000),
        _node("n3", status=NodeStatus.DRAINING),
        _node("n4", status=NodeStatus.LOST),
    ]
    holdings = Holdings({"base@b1": ["n1"]})
    lines: list[tuple[str, str, str | None]] = []
    built = await _run(_builds(rows, Clients(nodes), await _kept(Files()), holdings), lines)
    assert built == "n2"
    assert nodes["n2"].files == {"h1": b"archive-one", "h2": b"already there"}
    assert nodes["n2"].fetched == [("base@b1", ("http://n1",))]
    assert holdings.recorded == [("base@b1", "n2")]
    assert [n for n, f in nodes.items() if f.builds] == ["n2"]
    assert ("info", "step on n2", "0") in lines


async def test_a_base_the_node_holds_is_not_fetched() -> None:
    nodes = {"n1": FakeNode("n1")}
    holdings = Holdings({"base@b1": ["n1"]})
    await _run(_builds([_node("n1")], Clients(nodes), await _kept(Files()), holdings), [])
    assert nodes["n1"].fetched == [] and holdings.recorded == []


async def test_a_node_that_does_not_answer_while_prepared_is_dropped_and_the_next_builds() -> None:
    nodes = {"n1": FakeNode("n1", fail_prepare=True), "n2": FakeNode("n2")}
    clients = Clients(nodes)
    rows = [_node("n1"), _node("n2", used=100)]
    built = await _run(_builds(rows, clients, await _kept(Files()), Holdings({})), [])
    assert built == "n2" and clients.forgotten == ["n1"]
    assert nodes["n1"].builds == 0 and nodes["n2"].builds == 1


async def test_a_started_build_that_fails_is_not_run_again_elsewhere() -> None:
    for failure in (BuildFailedError("step 1 failed", step="1"),
                    UnavailableError("node n1 did not answer")):  # fmt: skip
        nodes = {"n1": FakeNode("n1", fail_build=failure), "n2": FakeNode("n2")}
        rows = [_node("n1"), _node("n2", used=100)]
        with pytest.raises(type(failure)):
            await _run(_builds(rows, Clients(nodes), await _kept(Files()), Holdings({})), [])
        assert nodes["n1"].builds == 1 and nodes["n2"].builds == 0


async def test_a_node_lost_mid_build_fails_it_and_its_stream_is_closed() -> None:
    nodes = {"n1": FakeNode("n1", hang=True), "n2": FakeNode("n2")}
    rows = [_node("n1"), _node("n2", used=100)]
    builds = _builds(rows, Clients(nodes), await _kept(Files()), Holdings({}), watch_s=0.01)
    task = asyncio.ensure_future(_run(builds, []))
    async with asyncio.timeout(30):  # a deadline, not a guess: it starts at once
        while nodes["n1"].builds == 0:
            await asyncio.sleep(0.01)
    rows[0] = _node("n1", status=NodeStatus.LOST)
    with pytest.raises(UnavailableError, match="lost mid-build"):
        await task
    assert nodes["n1"].cancelled and nodes["n2"].builds == 0


async def test_no_ready_node_is_a_clear_503() -> None:
    rows = [_node("n1", status=NodeStatus.DRAINING), _node("n2", used=10_000)]
    with pytest.raises(UnavailableError, match="no ready node"):
        await _run(_builds(rows, Clients({}), Files(), Holdings({})), [])
