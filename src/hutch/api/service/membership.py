"""Cluster membership (ADR 0025): nodes register, beat, drain; admins list them.

A node registers itself through any api (``POST /hutch/cluster/nodes``, the cluster token):
the row is inserted or refreshed with a lease of ``lease_s`` by the store's clock, and the
api then reconciles that node's own sandbox rows with it (``on_registered``: adopt what it
still runs, clean the rest). Heartbeats renew the lease. ``hutch serve`` registers its
in-process node the same way, so every node, one or many, goes through this one path.

A node whose wire (``api_version``) or hutch ``major.minor`` differs from the api's is
refused at registration (409 ``node_version_incompatible``) with both versions named.

A heartbeat lists the node's templates; the artifact holdings are synced from that list
(``on_templates``, a transaction of its own) only when it differs from the last list this
api synced for the node, or that sync is older than :data:`TEMPLATE_RESYNC_S` (ADR 0035):
with 100 nodes beating every 5 s the unchanged lists were 20 needless transactions a
second. A registration always syncs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Protocol

from hutch.api.nodes_model import (
    Node,
    NodeLoad,
    NodeRegistration,
    NodeStatus,
    NodeUsage,
    Registered,
)
from hutch.shared.errors import ConflictError, InvalidArgumentError
from hutch.shared.ids import NodeID

log = logging.getLogger(__name__)

#: A heartbeat's unchanged template list is synced again after this many seconds anyway.
TEMPLATE_RESYNC_S: Final = 60.0


class NodeStore(Protocol):
    """What membership needs of the store (``store/nodes.SqlNodeStore``)."""

    async def register(self, reg: NodeRegistration, *, lease_s: float) -> Registered: ...
    async def heartbeat(
        self,
        node_id: NodeID,
        *,
        boot_id: str,
        lease_s: float,
        usage: NodeUsage,
        templates: Sequence[str] | None = None,
    ) -> Node: ...
    async def set_status(
        self,
        node_id: NodeID,
        *,
        new: NodeStatus,
        expected: Sequence[NodeStatus] | frozenset[NodeStatus],
        reason: str | None = None,
        lease_before: datetime | None = None,
    ) -> Node | None: ...
    async def get_node(self, node_id: NodeID) -> Node: ...
    async def list_nodes(self) -> list[Node]: ...
    async def loads(self, node_ids: Sequence[NodeID] | None = None) -> dict[NodeID, NodeLoad]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class MembershipPolicy:
    """The api's side of the contract (from ``ApiSettings``)."""

    api_version: str
    version: str
    lease_s: float = 15.0
    grace_s: float = 30.0

    @property
    def heartbeat_interval_s(self) -> float:
        """A third of the lease: two beats may be lost before it ends."""
        return self.lease_s / 3


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconcileOutcome:
    """What reconciling a registered node did (ids)."""

    adopted: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    marked_killed: tuple[str, ...] = ()


#: Called after a registration with the row: reconciles that node's sandboxes with it.
OnRegistered = Callable[[Registered], Awaitable[ReconcileOutcome]]


def _minor(version: str) -> str:
    return ".".join(version.split("+", 1)[0].split(".")[:2])


def check_compatible(reg: NodeRegistration, policy: MembershipPolicy) -> None:
    """Refuse a node whose wire or hutch ``major.minor`` is not the api's."""
    if reg.api_version != policy.api_version or _minor(reg.version) != _minor(policy.version):
        raise ConflictError(
            f"node {reg.node_id} speaks node API {reg.api_version} as hutch {reg.version}; "
            f"this api needs node API {policy.api_version} and hutch "
            f"{_minor(policy.version)}.x ({policy.version})",
            public_message=f"Node {reg.node_id} is incompatible: it runs hutch {reg.version} "
            f"(node API {reg.api_version}) but this api runs hutch {policy.version} (node "
            f"API {policy.api_version}); upgrade the node to hutch {_minor(policy.version)}.x",
            error_code="node_version_incompatible",
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeView:
    """A node with what the store places on it (``GET /nodes``)."""

    node: Node
    load: NodeLoad


class MembershipService:
    """See the module docstring."""

    def __init__(
        self, *, nodes: NodeStore, policy: MembershipPolicy, on_registered: OnRegistered | None
    ) -> None:
        self._nodes = nodes
        self.policy = policy
        self.on_registered = on_registered
        #: ``(node, templates it reports, replace)`` after a registration (replace) or a
        #: heartbeat: the artifact holdings (ADR 0029); ``on_beat(node)`` after each beat.
        self.on_templates: Callable[[NodeID, Sequence[str], bool], Awaitable[None]] | None = None
        self.on_beat: Callable[[NodeID], None] | None = None
        #: The list last synced per node, and ``time.monotonic()`` then.
        self._synced: dict[NodeID, tuple[tuple[str, ...], float]] = {}

    async def register(self, reg: NodeRegistration) -> tuple[Registered, ReconcileOutcome]:
        """Record the node (refused if incompatible), then reconcile it."""
        check_compatible(reg, self.policy)
        registered = await self._nodes.register(reg, lease_s=self.policy.lease_s)
        log.info(
            "node %s registered at %s (boot %s, %s; was %s)",
            reg.node_id, reg.address, reg.boot_id, registered.node.status,
            "new" if registered.previous is None else registered.previous.status,
        )  # fmt: skip
        if self.on_templates is not None:
            await self.on_templates(reg.node_id, reg.templates, True)
            self._synced[reg.node_id] = (tuple(sorted(reg.templates)), time.monotonic())
        outcome = ReconcileOutcome()
        if self.on_registered is not None:
            outcome = await self.on_registered(registered)
        return registered, outcome

    async def heartbeat(
        self,
        node_id: NodeID,
        *,
        boot_id: str,
        usage: NodeUsage,
        templates: Sequence[str] | None = None,
    ) -> Node:
        """Renew the lease (see ``SqlNodeStore.heartbeat`` for the refusals)."""
        node = await self._nodes.heartbeat(
            node_id, boot_id=boot_id, lease_s=self.policy.lease_s, usage=usage,
            templates=templates,
        )  # fmt: skip
        if self.on_templates is not None and templates is not None:
            listed, now = tuple(sorted(templates)), time.monotonic()
            last = self._synced.get(node_id)
            if last is None or last[0] != listed or now - last[1] > TEMPLATE_RESYNC_S:
                await self.on_templates(node_id, templates, False)
                self._synced[node_id] = (listed, now)
        if self.on_beat is not None:
            self.on_beat(node_id)
        return node

    async def set_status(self, node_id: NodeID, status: NodeStatus) -> Node:
        """Drain (``draining``: no new placements, its sandboxes run on) or undrain
        (``ready``). A lost node can be neither: it must register again."""
        if status is NodeStatus.LOST:
            raise InvalidArgumentError("status: a node becomes lost only by its lease ending")
        changed = await self._nodes.set_status(
            node_id, new=status, expected=frozenset({NodeStatus.READY, NodeStatus.DRAINING})
        )
        if changed is None:
            node = await self._nodes.get_node(node_id)
            raise ConflictError(
                f"node {node_id} is {node.status}; it must register again first",
                public_message=f"Node {node_id} is {node.status}: only a ready or draining "
                "node can be drained or undrained",
            )
        log.info("node %s is now %s", node_id, status)
        return changed

    async def list_nodes(self) -> list[NodeView]:
        """Every node with its load."""
        listed = await self._nodes.list_nodes()
        loads = await self._nodes.loads()
        return [NodeView(node=n, load=loads.get(n.id, NodeLoad())) for n in listed]

    async def get_node(self, node_id: NodeID) -> NodeView:
        """One node with its load; ``NotFoundError`` if it never registered."""
        node = await self._nodes.get_node(node_id)
        loads = await self._nodes.loads([node_id])
        return NodeView(node=node, load=loads.get(node_id, NodeLoad()))
