"""``NodeSet``: one ``NodeClient`` over several nodes, for ``hutch api`` (roles as processes).

Every call about an existing sandbox goes to the node its store row names (``locate``):
the row's ``node_id`` is the truth, set in the create's ``running`` transition. A create
goes to the node with the fewest live sandboxes in the store; a node that refuses (full,
unreachable) means the next one, and when every node refused, the last refusal is raised.
This placement is the simple one that holds until issue 11's placement (capacity scores,
reservations in the create's transaction) lands with the node registry; until then the
nodes are the ones configured (``HUTCH_CLUSTER_NODES``).

Templates (imports, builds, deletes) go to the first node: artifacts are not yet shared
between nodes (issue 11's artifact store); nodes started by ``hutch cluster up`` all offer
the install's shared templates.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from hutch.api.nodes.http_client import HttpNodeClient
from hutch.api.service.node_status import NodeStatus
from hutch.api.service.ports import (
    ImageImport,
    ImportedImage,
    ImportProgress,
    PlacedSandbox,
    ReconciledNode,
    ResumedSandbox,
    SandboxLogLine,
    SandboxMetrics,
    SandboxSpec,
)
from hutch.shared.egress import EgressPolicy
from hutch.shared.errors import (
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    UnavailableError,
)
from hutch.shared.ids import NodeID, SandboxID, TemplateID

log = logging.getLogger("hutch.api.nodes")

#: The store's answer to "where does this sandbox run?" (None: no row, or not placed yet).
Locate = Callable[[SandboxID], Awaitable[NodeID | None]]
#: Live sandboxes the store counts on a node (placement's one input for now).
CountOn = Callable[[NodeID], Awaitable[int]]


class NodeSet:
    """See the module docstring. Satisfies ``NodeClient``, ``TemplateBuilder``,
    ``BuildRunner`` and ``NodeStatusSource`` (the last two by the first node)."""

    def __init__(
        self, nodes: Sequence[HttpNodeClient], *, locate: Locate, count_on: CountOn
    ) -> None:
        if not nodes:
            raise InvalidArgumentError("an api needs at least one node")
        self._nodes = {node.node_id: node for node in nodes}
        if len(self._nodes) != len(nodes):
            raise InvalidArgumentError("two configured nodes answered with the same node id")
        self._first = nodes[0]
        self._locate = locate
        self._count_on = count_on

    @property
    def node_id(self) -> NodeID:
        """The first node's id (``NodeClient.node_id``: the per-node sandbox limit's node)."""
        return self._first.node_id

    @property
    def nodes(self) -> Mapping[NodeID, HttpNodeClient]:
        """The nodes by id."""
        return self._nodes

    async def aclose(self) -> None:
        """Close every node's connections."""
        for node in self._nodes.values():
            await node.aclose()

    async def _node_of(self, sandbox_id: SandboxID) -> HttpNodeClient:
        node_id = await self._locate(sandbox_id)
        if node_id is None:
            raise NotFoundError(f"sandbox {sandbox_id} is not placed on any node")
        node = self._nodes.get(node_id)
        if node is None:
            raise UnavailableError(f"sandbox {sandbox_id} runs on node {node_id}, not known here")
        return node

    async def _by_load(self) -> list[HttpNodeClient]:
        counted = [(await self._count_on(node_id), i, node)
                   for i, (node_id, node) in enumerate(self._nodes.items())]  # fmt: skip
        return [node for _count, _i, node in sorted(counted, key=lambda c: (c[0], c[1]))]

    # ---- NodeClient --------------------------------------------------------------------

    async def create(self, spec: SandboxSpec) -> PlacedSandbox:
        """On the least-loaded node that accepts it (module docstring)."""
        refused: Exception | None = None
        for node in await self._by_load():
            try:
                return await node.create(spec)
            except (ResourceExhaustedError, UnavailableError) as exc:
                log.warning("node %s refused sandbox %s: %s", node.node_id, spec.sandbox_id, exc)
                refused = exc
        assert refused is not None
        raise refused

    async def kill(self, sandbox_id: SandboxID) -> None:
        """See ``NodeClient.kill``."""
        await (await self._node_of(sandbox_id)).kill(sandbox_id)

    async def pause(self, sandbox_id: SandboxID, *, keep_memory: bool) -> bool:
        """See ``NodeClient.pause``."""
        return await (await self._node_of(sandbox_id)).pause(sandbox_id, keep_memory=keep_memory)

    async def resume(self, spec: SandboxSpec, *, keep_memory: bool) -> ResumedSandbox:
        """On the node that holds its files (ADR 0004)."""
        node = await self._node_of(spec.sandbox_id)
        return await node.resume(spec, keep_memory=keep_memory)

    async def snapshot(self, sandbox_id: SandboxID, *, snapshot_id: TemplateID) -> None:
        """See ``NodeClient.snapshot``."""
        await (await self._node_of(sandbox_id)).snapshot(sandbox_id, snapshot_id=snapshot_id)

    async def delete_snapshot(self, snapshot_id: TemplateID) -> None:
        """On every node (a snapshot lives on the node its sandbox ran on)."""
        for node in self._nodes.values():
            try:
                await node.delete_snapshot(snapshot_id)
            except NotFoundError:
                continue

    async def list_running(self) -> Sequence[SandboxID]:
        """Every node's."""
        found: list[SandboxID] = []
        for node in self._nodes.values():
            found.extend(await node.list_running())
        return found

    async def set_metadata(self, sandbox_id: SandboxID, metadata: Mapping[str, str]) -> None:
        """See ``NodeClient.set_metadata``."""
        await (await self._node_of(sandbox_id)).set_metadata(sandbox_id, metadata)

    async def set_network(self, sandbox_id: SandboxID, policy: EgressPolicy) -> None:
        """See ``NodeClient.set_network``."""
        await (await self._node_of(sandbox_id)).set_network(sandbox_id, policy)

    async def metrics(
        self, sandbox_id: SandboxID, *, start: datetime | None, end: datetime | None
    ) -> Sequence[SandboxMetrics]:
        """See ``NodeClient.metrics``."""
        node = await self._node_of(sandbox_id)
        return await node.metrics(sandbox_id, start=start, end=end)

    async def logs(self, sandbox_id: SandboxID) -> Sequence[SandboxLogLine]:
        """See ``NodeClient.logs``."""
        return await (await self._node_of(sandbox_id)).logs(sandbox_id)

    async def reconcile(
        self, known: Sequence[SandboxID], *, paused: Sequence[SandboxID]
    ) -> ReconciledNode:
        """Refused: reconcile is per node (issue 11's membership), never across the set."""
        raise InvalidArgumentError("a node set is not reconciled as one node")

    # ---- NodeStatusSource, TemplateBuilder, BuildRunner: the first node ----------------

    async def status(self) -> NodeStatus:
        """The first node's (``GET /hutch/status`` shows one node)."""
        return await self._first.status()

    async def import_image(
        self, request: ImageImport, *, progress: ImportProgress | None = None
    ) -> ImportedImage:
        """On the first node."""
        return await self._first.import_image(request, progress=progress)

    async def delete(self, name: str) -> None:
        """On the first node."""
        await self._first.delete(name)

    async def has_files(self, files_hash: str) -> bool:
        """On the first node."""
        return await self._first.has_files(files_hash)

    async def store_files(self, files_hash: str, chunks: AsyncIterator[bytes]) -> None:
        """On the first node."""
        await self._first.store_files(files_hash, chunks)

    async def run_build(self, *args: Any, **kwargs: Any) -> None:
        """On the first node (same arguments as ``HttpNodeClient.run_build``)."""
        await self._first.run_build(*args, **kwargs)
