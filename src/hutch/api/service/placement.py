"""Placement (ADR 0025): which node a new sandbox goes to. Pure: no store, no I/O.

The store calls :func:`rank` inside the create's transaction with every node and what the
sandbox rows place on it (``store/nodes.node_loads``), locks the best node's row, checks it
again with :func:`misfit` (another api may have placed there meanwhile) and inserts the
``creating`` row with that node. Scoring, lower is better:

* **allocated**: the largest of the node's CPU, memory and sandbox-count fractions after
  this sandbox (CPU and memory against capacity times overcommit), weight 0.6;
* **used**: the larger of the host's CPU and memory use at its last heartbeat, weight 0.4;
* **artifact**: a node that already holds the template (its ``artifact_holdings`` row, or
  its heartbeat's list) gets 0.25 off: no fetch from a peer (ADR 0029);
* ties go to the node id, so the order is deterministic.

Concurrent creates would all rank the same node first and queue on its row lock, so the
store takes the first **unlocked** node of a :func:`shortlist` instead (``FOR UPDATE SKIP
LOCKED``, ``store/placement.py``): the fitting nodes whose score is within
:data:`SPREAD_MARGIN` of the best, at most :data:`SPREAD_MAX`. The margin is smaller than
the artifact bonus, so a node that must pull the template never stands in for one that
holds it.

A node fits when it is ``ready``, not excluded (it refused this create already), its
sandbox count is below its own ``max_sandboxes`` and the api's per-node limit, and the
sandbox's CPU and memory fit under capacity times overcommit. A sandbox that mounts a local
volume must go to the node holding it (``pinned``). When nothing fits, :class:`NoNodeFits`
carries each node's reason for the 503's message.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

from hutch.api.nodes_model import Candidate, NodeStatus
from hutch.shared.errors import UnavailableError
from hutch.shared.ids import NodeID

ALLOCATED_WEIGHT: Final = 0.6
USED_WEIGHT: Final = 0.4
ARTIFACT_BONUS: Final = 0.25
#: How far (in score) behind the best a node may be and still take a create while the
#: better ones are locked by other creates (below :data:`ARTIFACT_BONUS` on purpose).
SPREAD_MARGIN: Final = 0.1
#: At most this many nodes are offered to one create's ``SKIP LOCKED``.
SPREAD_MAX: Final = 32


@dataclass(frozen=True, slots=True, kw_only=True)
class PlacementPolicy:
    """The api's placement knobs (``HUTCH_PLACEMENT_*``)."""

    #: vCPUs of sandboxes per host CPU (sandboxes mostly idle).
    cpu_overcommit: float = 16.0
    #: MiB of sandbox memory limits per MiB of host memory (limits, not use).
    memory_overcommit: float = 4.0
    #: The api's own per-node limit (``HUTCH_MAX_SANDBOXES_PER_NODE``); None: the node's.
    max_sandboxes_per_node: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Demand:
    """What a new sandbox needs."""

    cpu_count: int
    memory_mb: int
    disk_mb: int = 0
    #: The node's template name (``name`` or ``name@build``).
    template: str = ""
    #: The node it must go to (a local volume lives there); None: any.
    pinned: NodeID | None = None
    #: Nodes that refused this create already.
    excluded: frozenset[NodeID] = frozenset()


def misfit(c: Candidate, d: Demand, policy: PlacementPolicy) -> str | None:
    """Why ``d`` does not fit on ``c`` (None: it fits)."""
    node = c.node
    if node.status is not NodeStatus.READY:
        return f"{node.status.value}"
    if c.lease_expired:
        return "its lease ended (no heartbeat)"
    if node.id in d.excluded:
        return "refused this create"
    if d.pinned is not None and node.id != d.pinned:
        return f"the sandbox's local volume lives on node {d.pinned}"
    return over_capacity(c, d, policy)


def over_capacity(c: Candidate, d: Demand, policy: PlacementPolicy) -> str | None:
    """Why ``d`` would take ``c`` past its sandbox limit or its allocatable CPU or memory
    (None: it fits). A create checks this after :func:`misfit`'s status checks; a resume,
    whose sandbox cannot move, checks only this against its own node (ADR 0026)."""
    node, load = c.node, c.load
    limit = node.capacity.max_sandboxes
    if policy.max_sandboxes_per_node is not None:
        limit = min(limit, policy.max_sandboxes_per_node)
    if load.sandboxes + 1 > limit:
        return f"runs {load.sandboxes} sandboxes, its limit is {limit}"
    cpu_cap = node.capacity.cpu_count * policy.cpu_overcommit
    if load.allocated_cpu + d.cpu_count > cpu_cap:
        return f"{load.allocated_cpu} + {d.cpu_count} vCPUs over {cpu_cap:g} allocatable"
    mem_cap = node.capacity.memory_mb * policy.memory_overcommit
    if load.allocated_memory_mb + d.memory_mb > mem_cap:
        return f"{load.allocated_memory_mb} + {d.memory_mb} MiB over {mem_cap:g} MiB allocatable"
    return None


def score(c: Candidate, d: Demand, policy: PlacementPolicy) -> float:
    """Lower is better (see the module docstring)."""
    node, load = c.node, c.load
    limit = node.capacity.max_sandboxes
    if policy.max_sandboxes_per_node is not None:
        limit = min(limit, policy.max_sandboxes_per_node)
    allocated = max(
        (load.allocated_cpu + d.cpu_count) / (node.capacity.cpu_count * policy.cpu_overcommit),
        (load.allocated_memory_mb + d.memory_mb)
        / (node.capacity.memory_mb * policy.memory_overcommit),
        (load.sandboxes + 1) / max(1, limit),
    )
    used = max(
        node.usage.cpu_pct / 100.0,
        node.usage.memory_used_mb / max(1, node.capacity.memory_mb),
    )
    holds = c.holds_artifact or bool(d.template and d.template in node.templates)
    bonus = ARTIFACT_BONUS if holds else 0.0
    return ALLOCATED_WEIGHT * allocated + USED_WEIGHT * used - bonus


class NoNodeFits(UnavailableError):
    """No node can take the sandbox: infra's 503 ``sandbox_capacity_unavailable`` (the SDK
    retries it), with each node's reason in the message."""

    def __init__(self, reasons: Mapping[NodeID, str]) -> None:
        if reasons:
            why = "; ".join(f"node {n}: {r}" for n, r in sorted(reasons.items()))
        else:
            why = "no node is registered"
        super().__init__(
            f"no node fits the sandbox ({why})",
            public_message="Failed to place sandbox: not enough capacity for the requested "
            f"resources right now, please retry shortly ({why})",
            error_code="sandbox_capacity_unavailable",
        )
        self.reasons = dict(reasons)


def rank(candidates: Sequence[Candidate], demand: Demand, policy: PlacementPolicy) -> list[NodeID]:
    """The nodes ``demand`` fits on, best first; :class:`NoNodeFits` when none."""
    return [node_id for _, node_id in _scored(candidates, demand, policy)]


def shortlist(
    candidates: Sequence[Candidate], demand: Demand, policy: PlacementPolicy
) -> list[NodeID]:
    """The fitting nodes as good as the best one for a create racing others: best first,
    within :data:`SPREAD_MARGIN` of its score, at most :data:`SPREAD_MAX` (never empty;
    :class:`NoNodeFits` when nothing fits)."""
    scored = _scored(candidates, demand, policy)
    best = scored[0][0]
    return [node_id for s, node_id in scored[:SPREAD_MAX] if s <= best + SPREAD_MARGIN]


def _scored(
    candidates: Sequence[Candidate], demand: Demand, policy: PlacementPolicy
) -> list[tuple[float, NodeID]]:
    fitting: list[tuple[float, NodeID]] = []
    reasons: dict[NodeID, str] = {}
    for c in candidates:
        why = misfit(c, demand, policy)
        if why is None:
            fitting.append((score(c, demand, policy), c.node.id))
        else:
            reasons[c.node.id] = why
    if not fitting:
        raise NoNodeFits(reasons)
    return sorted(fitting)


def pinned_node(volume_nodes: Collection[NodeID | None]) -> NodeID | None:
    """The node a sandbox must go to given the nodes its local volumes live on (None:
    any); two different nodes cannot both be satisfied."""
    known = {n for n in volume_nodes if n is not None}
    if len(known) > 1:
        raise UnavailableError(
            f"the sandbox's local volumes live on different nodes ({sorted(known)})",
            public_message="Failed to place sandbox: its local volumes live on different "
            f"nodes ({', '.join(sorted(known))}); mount volumes of one node",
            error_code="sandbox_capacity_unavailable",
        )
    return next(iter(known), None)


@dataclass(frozen=True, slots=True, kw_only=True)
class Placement:
    """:class:`~hutch.api.nodes_model.Placer` for one create: a demand under a policy."""

    demand: Demand
    policy: PlacementPolicy
    #: Why excluded nodes were excluded (for the message when nothing else fits).
    refusals: Mapping[NodeID, str] = field(default_factory=dict)

    @property
    def artifact(self) -> str:
        """The node template the sandbox starts from (the store marks its holders)."""
        return self.demand.template

    def rank(self, candidates: Sequence[Candidate]) -> list[NodeID]:
        """See :func:`rank`; a node that refused says so in the 503."""
        try:
            return rank(candidates, self.demand, self.policy)
        except NoNodeFits as exc:
            raise NoNodeFits({**exc.reasons, **self.refusals}) from None

    def shortlist(self, candidates: Sequence[Candidate]) -> list[NodeID]:
        """See :func:`shortlist`; a node that refused says so in the 503."""
        try:
            return shortlist(candidates, self.demand, self.policy)
        except NoNodeFits as exc:
            raise NoNodeFits({**exc.reasons, **self.refusals}) from None

    def misfit(self, candidate: Candidate) -> str | None:
        """See :func:`misfit`."""
        return misfit(candidate, self.demand, self.policy)

    def excluding(self, node_id: NodeID, reason: str) -> Placement:
        """This placement without ``node_id``."""
        return replace(
            self,
            demand=replace(self.demand, excluded=self.demand.excluded | {node_id}),
            refusals={**self.refusals, node_id: reason},
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ResumeFit:
    """:class:`~hutch.api.nodes_model.NodeFit` for a resume: the paused sandbox's demand
    back on the node it is on, by the create's accounting (:func:`over_capacity`)."""

    demand: Demand
    policy: PlacementPolicy

    def misfit(self, candidate: Candidate) -> str | None:
        """See :func:`over_capacity`."""
        return over_capacity(candidate, self.demand, self.policy)
