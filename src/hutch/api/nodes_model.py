"""Cluster membership's records (ADR 0025): a node as the store knows it.

Apart from ``models.py`` (sandboxes, teams, templates) because membership is a domain of
its own: the store's ``nodes`` table, the api's ``MembershipService`` and ``GET /nodes``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from hutch.shared.ids import NodeID


class NodeStatus(StrEnum):
    """``ready``: takes new sandboxes; ``draining``: keeps its sandboxes, takes no new
    ones; ``lost``: its lease ran out past the grace, its sandboxes were reported killed."""

    READY = "ready"
    DRAINING = "draining"
    LOST = "lost"


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeCapacity:
    """What a node offers to sandboxes (as it registered it)."""

    cpu_count: int
    memory_mb: int
    disk_mb: int
    max_sandboxes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeUsage:
    """The host's load at the node's last heartbeat."""

    cpu_pct: float = 0.0
    memory_used_mb: int = 0
    disk_used_mb: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeRegistration:
    """What a node says of itself when it registers (``POST /hutch/cluster/nodes``)."""

    node_id: NodeID
    address: str
    api_version: str
    version: str
    boot_id: str
    capacity: NodeCapacity
    labels: Mapping[str, str] = field(default_factory=dict)
    #: The node process's start (``RegisterNode.incarnation``); "" from an older node.
    incarnation: str = ""
    usage: NodeUsage = field(default_factory=NodeUsage)
    #: Templates the node holds (names, ``name@build`` versions).
    templates: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Node:
    """A registered node (one ``nodes`` row)."""

    id: NodeID
    address: str
    api_version: str
    version: str
    boot_id: str
    capacity: NodeCapacity
    labels: Mapping[str, str]
    usage: NodeUsage
    status: NodeStatus
    status_changed_at: datetime
    lost_reason: str | None
    registered_at: datetime
    heartbeat_at: datetime
    lease_expires_at: datetime
    create_successes: int = 0
    create_fails: int = 0
    templates: tuple[str, ...] = ()
    #: The registered node process's start (``NodeRegistration.incarnation``).
    incarnation: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeLoad:
    """What the store's sandbox rows place on a node (every team's)."""

    sandboxes: int = 0
    starting: int = 0
    allocated_cpu: int = 0
    allocated_memory_mb: int = 0
    allocated_disk_mb: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Registered:
    """What a registration did: the row now, and the one it replaced (None: new node)."""

    node: Node
    previous: Node | None

    @property
    def rebooted(self) -> bool:
        """The node came back with another boot id: its old sandboxes are gone."""
        return self.previous is not None and self.previous.boot_id != self.node.boot_id

    @property
    def same_process(self) -> bool:
        """The node process that registered before registers again (a lease lost to a
        partition or a refused beat): same boot and same incarnation, so its creates in
        flight are still being made and must survive the registration."""
        p, n = self.previous, self.node
        return p is not None and bool(n.incarnation) and (p.boot_id, p.incarnation) == (
            n.boot_id, n.incarnation
        )  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    """A node and what is placed on it, as placement weighs it."""

    node: Node
    load: NodeLoad = field(default_factory=NodeLoad)
    #: Its lease ended (by the store's clock): silent, maybe on its way to lost.
    lease_expired: bool = False
    #: The store's ``artifact_holdings`` says it holds the sandbox's template (ADR 0029).
    holds_artifact: bool = False


class NodeFit(Protocol):
    """Whether a sandbox fits on one node, as a resume's transaction asks it
    (``store/placement.reserve_on``)."""

    def misfit(self, candidate: Candidate) -> str | None:
        """Why the sandbox does not fit on the (locked, reloaded) candidate; None: fits."""
        ...


class Placer(Protocol):
    """Placement as the store's create transaction calls it (``service/placement.py``)."""

    @property
    def artifact(self) -> str:
        """The node template the sandbox starts from ("" none): holders are preferred."""
        ...

    def rank(self, candidates: Sequence[Candidate]) -> list[NodeID]:
        """The nodes the sandbox fits on, best first; ``NoNodeFits`` when none."""
        ...

    def shortlist(self, candidates: Sequence[Candidate]) -> list[NodeID]:
        """The fitting nodes as good as the best for a create that races others (best
        first, never empty); ``NoNodeFits`` when none."""
        ...

    def misfit(self, candidate: Candidate) -> str | None:
        """Why the sandbox does not fit on the (locked, reloaded) candidate; None: fits."""
        ...

    def excluding(self, node_id: NodeID, reason: str) -> Placer:
        """The same placement with ``node_id`` ruled out."""
        ...
