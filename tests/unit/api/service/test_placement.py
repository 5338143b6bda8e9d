"""Placement's pure logic (ADR 0025, 0026): fit, score, order, shortlist, refusals, volume
pinning."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hutch.api.nodes_model import Candidate, Node, NodeCapacity, NodeLoad, NodeStatus, NodeUsage
from hutch.api.service.placement import (
    SPREAD_MAX,
    Demand,
    NoNodeFits,
    Placement,
    PlacementPolicy,
    misfit,
    pinned_node,
    rank,
    shortlist,
)
from hutch.shared.errors import UnavailableError
from hutch.shared.ids import NodeID

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = PlacementPolicy(cpu_overcommit=2.0, memory_overcommit=1.0)


def node(node_id: str, *, status: NodeStatus = NodeStatus.READY, cpu: int = 4,
         memory_mb: int = 4096, max_sandboxes: int = 10, cpu_pct: float = 0.0,
         memory_used_mb: int = 0, templates: tuple[str, ...] = ()) -> Node:  # fmt: skip
    return Node(
        id=NodeID(node_id), address=f"http://{node_id}", api_version="v1", version="0.1.0",
        boot_id="b", capacity=NodeCapacity(cpu_count=cpu, memory_mb=memory_mb, disk_mb=1000,
                                           max_sandboxes=max_sandboxes),
        labels={}, usage=NodeUsage(cpu_pct=cpu_pct, memory_used_mb=memory_used_mb),
        status=status, status_changed_at=T0, lost_reason=None, registered_at=T0,
        heartbeat_at=T0, lease_expires_at=T0, templates=templates,
    )  # fmt: skip


def cand(n: Node, *, sandboxes: int = 0, cpu: int = 0, memory_mb: int = 0) -> Candidate:
    return Candidate(
        node=n,
        load=NodeLoad(sandboxes=sandboxes, allocated_cpu=cpu, allocated_memory_mb=memory_mb),
    )


SMALL = Demand(cpu_count=1, memory_mb=512, template="base")


def test_least_allocated_node_first_and_ties_by_id() -> None:
    got = rank(
        [cand(node("c"), sandboxes=3, cpu=3, memory_mb=1536), cand(node("b")), cand(node("a"))],
        SMALL, POLICY,
    )  # fmt: skip
    assert got == ["a", "b", "c"]


def test_host_use_weighs_in() -> None:
    busy = node("a", cpu_pct=90.0)
    idle = node("b", memory_used_mb=100)
    assert rank([cand(busy), cand(idle)], SMALL, POLICY) == ["b", "a"]


def test_a_node_holding_the_template_is_preferred() -> None:
    holder = node("z", templates=("base",))
    other = node("a")
    assert rank([cand(other), cand(holder, sandboxes=2, cpu=2, memory_mb=1024)], SMALL,
                POLICY)[0] == "z"  # fmt: skip
    # ... but not past the point where it is much fuller.
    full_holder = cand(holder, sandboxes=9, cpu=7, memory_mb=3500)
    assert rank([cand(other), full_holder], SMALL, POLICY)[0] == "a"


@pytest.mark.parametrize(
    ("candidate", "reason"),
    [
        (cand(node("a", status=NodeStatus.DRAINING)), "draining"),
        (cand(node("a", status=NodeStatus.LOST)), "lost"),
        (cand(node("a"), sandboxes=10), "its limit is 10"),
        (cand(node("a"), cpu=8), "vCPUs over 8 allocatable"),
        (cand(node("a"), memory_mb=3800), "MiB over 4096 MiB allocatable"),
    ],
)
def test_misfits_say_why(candidate: Candidate, reason: str) -> None:
    why = misfit(candidate, SMALL, POLICY)
    assert why is not None and reason in why


def test_the_apis_own_limit_and_exclusions() -> None:
    limited = PlacementPolicy(max_sandboxes_per_node=2)
    why = misfit(cand(node("a"), sandboxes=2), SMALL, limited)
    assert why is not None and "limit is 2" in why
    assert (
        misfit(
            cand(node("a")),
            Demand(cpu_count=1, memory_mb=1, excluded=frozenset({NodeID("a")})),
            POLICY,
        )
        == "refused this create"
    )


def test_nothing_fits_is_a_503_naming_every_node() -> None:
    with pytest.raises(NoNodeFits) as info:
        rank([cand(node("a", status=NodeStatus.DRAINING)), cand(node("b"), sandboxes=10)],
             SMALL, POLICY)  # fmt: skip
    exc = info.value
    assert isinstance(exc, UnavailableError) and exc.retryable
    assert exc.error_code == "sandbox_capacity_unavailable"
    assert exc.public_message.startswith("Failed to place sandbox: not enough capacity")
    assert "node a: draining" in exc.public_message and "node b: runs 10" in exc.public_message
    with pytest.raises(NoNodeFits, match="no node is registered"):
        rank([], SMALL, POLICY)


def test_a_refusing_node_is_excluded_and_named() -> None:
    placement = Placement(demand=SMALL, policy=POLICY)
    nodes = [cand(node("a")), cand(node("b"), sandboxes=1, cpu=1, memory_mb=512)]
    assert placement.rank(nodes) == ["a", "b"]
    retry = placement.excluding(NodeID("a"), "refused: node full")
    assert retry.rank(nodes) == ["b"]
    with pytest.raises(NoNodeFits) as info:
        retry.excluding(NodeID("b"), "refused: envd did not answer").rank(nodes)
    assert "node a: refused: node full" in info.value.public_message
    assert "node b: refused: envd did not answer" in info.value.public_message


def test_volume_pinning() -> None:
    pinned = Demand(cpu_count=1, memory_mb=1, pinned=NodeID("b"))
    assert rank([cand(node("a")), cand(node("b"), sandboxes=5)], pinned, POLICY) == ["b"]
    why = misfit(cand(node("a")), pinned, POLICY)
    assert why is not None and "local volume lives on node b" in why
    assert pinned_node([None, NodeID("x"), NodeID("x")]) == "x"
    assert pinned_node([]) is None
    with pytest.raises(UnavailableError, match="different nodes"):
        pinned_node([NodeID("x"), NodeID("y")])


def test_shortlist_is_the_nodes_as_good_as_the_best() -> None:
    """Equally loaded nodes are interchangeable for racing creates; a much fuller one, one
    without the template when others hold it, and a misfit are not."""
    nodes = [
        cand(node("a", templates=("base",))),
        cand(node("b", templates=("base",)), sandboxes=1, cpu=1, memory_mb=512),
        cand(node("c")),  # must pull the template: 0.25 worse
        cand(node("d", templates=("base",)), sandboxes=8, cpu=8, memory_mb=4096),  # full
        cand(node("e", templates=("base",)), sandboxes=6, cpu=6, memory_mb=3072),
    ]
    assert rank(nodes, SMALL, POLICY) == ["a", "b", "c", "e"]
    assert shortlist(nodes, SMALL, POLICY) == ["a", "b"]


def test_shortlist_is_capped_and_never_empty() -> None:
    many = [cand(node(f"n{i:03d}")) for i in range(3 * SPREAD_MAX)]
    got = shortlist(many, SMALL, POLICY)
    assert got == [f"n{i:03d}" for i in range(SPREAD_MAX)]
    assert shortlist([cand(node("only"), sandboxes=9)], SMALL, POLICY) == ["only"]
    with pytest.raises(NoNodeFits):
        shortlist([cand(node("x", status=NodeStatus.DRAINING))], SMALL, POLICY)


def test_placement_shortlist_names_refusals_when_nothing_fits() -> None:
    placement = Placement(demand=SMALL, policy=POLICY).excluding(NodeID("a"), "refused: full")
    with pytest.raises(NoNodeFits) as caught:
        placement.shortlist([cand(node("a"))])
    assert caught.value.reasons == {"a": "refused: full"}


def test_placement_a_holding_row_is_preferred_and_a_full_holder_falls_back() -> None:
    # ADR 0029: the store's artifact_holdings row marks the holder (no heartbeat list).
    placement = Placement(demand=SMALL, policy=POLICY)
    assert placement.artifact == "base"
    holder = Candidate(node=node("z"), load=NodeLoad(sandboxes=2, allocated_cpu=2,
                                                     allocated_memory_mb=1024),
                       holds_artifact=True)  # fmt: skip
    assert placement.rank([cand(node("a")), holder]) == ["z", "a"]
    # The holder is full: the create goes to a node that fetches it instead.
    full = Candidate(node=node("z", max_sandboxes=2), load=NodeLoad(sandboxes=2),
                     holds_artifact=True)  # fmt: skip
    assert placement.rank([cand(node("a")), full]) == ["a"]
    # The holder refused (it could not start it): the next node, which fetches it.
    assert placement.excluding(NodeID("z"), "refused").rank([holder, cand(node("a"))]) == ["a"]
