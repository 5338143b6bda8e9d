"""``NodeSet``: creates on the least-loaded node that accepts, every other call to the node
the sandbox's row names."""

from __future__ import annotations

import pytest

from hutch.api.nodes.nodeset import NodeSet
from hutch.api.service.ports import SandboxSpec
from hutch.shared.errors import InvalidArgumentError, NotFoundError, UnavailableError
from hutch.shared.ids import NodeID, SandboxID, TeamID, TemplateID
from tests.fakes.node import FakeNodeClient


def _spec(sid: str) -> SandboxSpec:
    return SandboxSpec(sandbox_id=SandboxID(sid), team_id=TeamID("t"),
                       template_id=TemplateID("base"), cpu_count=1, memory_mb=256,
                       disk_mb=1024)  # fmt: skip


def _set(*nodes: FakeNodeClient, placed: dict[str, str], load: dict[str, int]) -> NodeSet:
    async def locate(sid: SandboxID) -> NodeID | None:
        found = placed.get(sid)
        return NodeID(found) if found else None

    async def count_on(node_id: NodeID) -> int:
        return load.get(node_id, 0)

    return NodeSet(list(nodes), locate=locate, count_on=count_on)  # type: ignore[arg-type]


async def test_nodeset_create_goes_to_the_least_loaded_node() -> None:
    a, b = FakeNodeClient(node_id=NodeID("a")), FakeNodeClient(node_id=NodeID("b"))
    nodes = _set(a, b, placed={}, load={"a": 3, "b": 1})
    placed = await nodes.create(_spec("s1"))
    assert placed.node_id == "b" and "s1" in b.running and "s1" not in a.running


async def test_nodeset_refusal_moves_to_the_next_node_and_the_last_refusal_is_raised() -> None:
    a = FakeNodeClient(node_id=NodeID("a"), fail_next_create=UnavailableError("down"))
    b = FakeNodeClient(node_id=NodeID("b"))
    nodes = _set(a, b, placed={}, load={})
    assert (await nodes.create(_spec("s1"))).node_id == "b"
    a.fail_next_create = UnavailableError("down")
    b.fail_next_create = UnavailableError("also down")
    with pytest.raises(UnavailableError, match="also down"):
        await nodes.create(_spec("s2"))


async def test_nodeset_calls_go_to_the_node_the_row_names() -> None:
    a, b = FakeNodeClient(node_id=NodeID("a")), FakeNodeClient(node_id=NodeID("b"))
    placed = {"s1": "b", "s2": "elsewhere"}
    nodes = _set(a, b, placed=placed, load={"a": 0, "b": 5})
    await b.create(_spec("s1"))
    await nodes.set_metadata(SandboxID("s1"), {"k": "v"})
    assert b.metadata["s1"] == {"k": "v"}
    await nodes.kill(SandboxID("s1"))
    assert b.killed == ["s1"] and a.killed == []
    with pytest.raises(UnavailableError, match="elsewhere"):
        await nodes.kill(SandboxID("s2"))
    with pytest.raises(NotFoundError):
        await nodes.kill(SandboxID("s3"))


def test_nodeset_needs_distinct_nodes() -> None:
    with pytest.raises(InvalidArgumentError):
        _set(placed={}, load={})
    with pytest.raises(InvalidArgumentError):
        _set(FakeNodeClient(node_id=NodeID("a")), FakeNodeClient(node_id=NodeID("a")),
             placed={}, load={})  # fmt: skip
