"""``NodeRouter``: the ``NodeClient`` of a cluster. Every call goes to the sandbox's own node.

A create or resume goes to ``spec.node_id`` (placement chose it, the row records it);
every other sandbox call to the node of the sandbox's row (``sandboxes.node_id``), through
the ``NodeRegistry``'s client for it. A call whose node does not answer drops that client, so
the next one reads the node's row again. ``RoutedNodeClient`` (``service/routing.py``) wraps
it to keep the proxy's routes in step.

With a ``LeaseWatch``, every call about one sandbox but the create (its service watches
that one, ADR 0033) ends when the node's lease does: a frozen or cut-off node answers
``NodeUnresponsiveError`` (503 ``sandbox_node_unresponsive``, naming the node and the verb)
within a lease, not after the node client's 300 s timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Protocol, TypeVar, cast

from hutch.api.models import Sandbox
from hutch.api.nodes_model import Node, NodeStatus
from hutch.api.service.artifacts import ArtifactService
from hutch.api.service.create_watch import LeaseWatch
from hutch.api.service.ports import (
    ImageImport,
    ImportedImage,
    ImportProgress,
    NodeClient,
    PlacedSandbox,
    ReconciledNode,
    ResumedSandbox,
    SandboxLogLine,
    SandboxMetrics,
    SandboxSpec,
    TemplateBuilder,
)
from hutch.shared.egress import EgressPolicy
from hutch.shared.errors import HutchError, InvalidArgumentError, NotFoundError, UnavailableError
from hutch.shared.ids import NodeID, SandboxID, TemplateID

_T = TypeVar("_T")
_log = logging.getLogger(__name__)


def _builder(client: NodeClient) -> TemplateBuilder:
    """A node's client builds too (``HttpNodeClient`` is a ``TemplateBuilder``)."""
    return cast("TemplateBuilder", client)


class Clients(Protocol):
    """Node clients by id (``NodeRegistry``)."""

    async def client(self, node_id: NodeID) -> NodeClient: ...
    async def forget(self, node_id: NodeID) -> None: ...


class NodeRouter:
    """See the module docstring."""

    def __init__(
        self,
        *,
        clients: Clients,
        find_sandbox: Callable[[SandboxID], Awaitable[Sandbox | None]],
        list_nodes: Callable[[], Awaitable[list[Node]]],
        artifacts: ArtifactService | None = None,
        lease_watch: LeaseWatch | None = None,
    ) -> None:
        #: Set: a sandbox's call ends when its node's lease does (the module docstring).
        self._watch = lease_watch
        #: Which node holds which template (ADR 0029): deletes reach every holder.
        self._artifacts = artifacts
        self._clients = clients
        self._find = find_sandbox
        self._list_nodes = list_nodes

    @property
    def node_id(self) -> NodeID:
        """A cluster has no one node: placement chooses (never asked when it is on)."""
        raise InvalidArgumentError("a cluster's router stands for no single node")

    async def _on(self, node_id: NodeID) -> NodeClient:
        return await self._clients.client(node_id)

    async def _call(
        self,
        node_id: NodeID,
        call: Callable[[NodeClient], Awaitable[_T]],
        *,
        doing: str | None = None,
    ) -> _T:
        """``doing`` (what the call does, for the error): watched by the node's lease,
        connecting included (a new client asks the node for its info first)."""

        async def on_node() -> _T:
            return await call(await self._on(node_id))

        try:
            if doing is not None and self._watch is not None:
                return await self._watch.call(node_id, on_node(), doing=doing)
            return await on_node()
        except UnavailableError:
            await self._clients.forget(node_id)
            raise

    async def call(self, node_id: NodeID, call: Callable[[NodeClient], Awaitable[_T]]) -> _T:
        """``call`` with ``node_id``'s client (dropped when the node does not answer)."""
        return await self._call(node_id, call)

    async def _node_of(self, sandbox_id: SandboxID) -> NodeID:
        row = await self._find(sandbox_id)
        if row is None or row.node_id is None:
            raise NotFoundError(f"sandbox {sandbox_id} is on no node")
        return row.node_id

    def _spec_node(self, spec: SandboxSpec) -> NodeID:
        if spec.node_id is None:
            raise InvalidArgumentError(f"sandbox {spec.sandbox_id} was placed on no node")
        return spec.node_id

    async def create(self, spec: SandboxSpec) -> PlacedSandbox:
        """On the node placement chose."""
        return await self._call(self._spec_node(spec), lambda c: c.create(spec))

    async def kill(self, sandbox_id: SandboxID) -> None:
        """On the sandbox's node; a sandbox on no node (its row is gone) has nothing to
        kill anywhere this api knows of."""
        try:
            node_id = await self._node_of(sandbox_id)
        except NotFoundError:
            return
        await self._call(node_id, lambda c: c.kill(sandbox_id),
                         doing=f"sandbox {sandbox_id} was being killed")  # fmt: skip

    async def pause(self, sandbox_id: SandboxID, *, keep_memory: bool) -> bool:
        """On the sandbox's node."""
        node_id = await self._node_of(sandbox_id)
        return await self._call(node_id, lambda c: c.pause(sandbox_id, keep_memory=keep_memory),
                                doing=f"sandbox {sandbox_id} was being paused")  # fmt: skip

    async def resume(self, spec: SandboxSpec, *, keep_memory: bool) -> ResumedSandbox:
        """On the node that holds the paused sandbox."""
        node_id = spec.node_id or await self._node_of(spec.sandbox_id)
        return await self._call(node_id, lambda c: c.resume(spec, keep_memory=keep_memory),
                                doing=f"sandbox {spec.sandbox_id} was being resumed")  # fmt: skip

    async def snapshot(self, sandbox_id: SandboxID, *, snapshot_id: TemplateID) -> None:
        """On the sandbox's node."""
        node_id = await self._node_of(sandbox_id)
        await self._call(node_id, lambda c: c.snapshot(sandbox_id, snapshot_id=snapshot_id),
                         doing=f"sandbox {sandbox_id} was being snapshotted")  # fmt: skip

    async def _live_nodes(self) -> list[NodeID]:
        return [n.id for n in await self._list_nodes() if n.status is not NodeStatus.LOST]

    async def delete_snapshot(self, snapshot_id: TemplateID) -> None:
        """On every live node and every holder (idempotent); a holder that does not answer
        is marked, and the delete applied when it is back (``ArtifactService``)."""
        await self._delete_everywhere(snapshot_id, snapshot=True)

    async def delete_template(self, name: str) -> None:
        """A template's files, on every node that holds them (as :meth:`delete_snapshot`)."""
        await self._delete_everywhere(name, snapshot=False)

    async def delete_on(self, node_id: NodeID, name: str) -> None:
        """Delete template or snapshot ``name`` on one node (idempotent there)."""
        await self._call(node_id, lambda c: c.delete_snapshot(TemplateID(name)),
                         doing=f"{name} was being deleted")  # fmt: skip

    async def _delete_everywhere(self, name: str, *, snapshot: bool) -> None:
        nodes = await self._list_nodes()
        live = [n.id for n in nodes if n.status is not NodeStatus.LOST]
        if self._artifacts is None:
            for node_id in live:
                with contextlib.suppress(HutchError):
                    await self.delete_on(node_id, name)
            return
        await self._artifacts.delete_everywhere(
            name, live=live, delete_on=self.delete_on, known=[n.id for n in nodes]
        )

    async def import_candidates(self, disk_mb: int | None = None) -> list[NodeID]:
        """Ready nodes (not draining, not lost) that can take an import, the most free disk
        first; ``disk_mb``: only nodes with at least that much free."""
        ready = [n for n in await self._list_nodes() if n.status is NodeStatus.READY]

        def free(node: Node) -> int:
            return node.capacity.disk_mb - node.usage.disk_used_mb

        fits = [n for n in ready if free(n) > 0 and (not disk_mb or free(n) >= disk_mb)]
        return [n.id for n in sorted(fits, key=lambda n: (-free(n), n.id))]

    async def is_lost(self, node_id: NodeID) -> bool:
        """The node is ``lost`` (or gone from the table)."""
        for node in await self._list_nodes():
            if node.id == node_id:
                return node.status is NodeStatus.LOST
        return True

    async def import_on(
        self, node_id: NodeID, request: ImageImport, *, progress: ImportProgress | None = None
    ) -> ImportedImage:
        """Import ``request`` on one node, following its progress."""
        return await self._call(
            node_id, lambda c: _builder(c).import_image(request, progress=progress)
        )

    async def list_running(self) -> Sequence[SandboxID]:
        """Every live node's sandboxes (nodes that do not answer are left out)."""
        found: list[SandboxID] = []
        for node_id in await self._live_nodes():
            with contextlib.suppress(UnavailableError):
                found.extend(await self._call(node_id, lambda c: c.list_running()))
        return found

    async def set_metadata(self, sandbox_id: SandboxID, metadata: Mapping[str, str]) -> None:
        """On the sandbox's node."""
        node_id = await self._node_of(sandbox_id)
        await self._call(node_id, lambda c: c.set_metadata(sandbox_id, metadata),
                         doing=f"sandbox {sandbox_id}'s metadata was being set")  # fmt: skip

    async def set_network(self, sandbox_id: SandboxID, policy: EgressPolicy) -> None:
        """On the sandbox's node."""
        node_id = await self._node_of(sandbox_id)
        await self._call(node_id, lambda c: c.set_network(sandbox_id, policy),
                         doing=f"sandbox {sandbox_id}'s network was being set")  # fmt: skip

    async def metrics(
        self, sandbox_id: SandboxID, *, start: datetime | None, end: datetime | None
    ) -> Sequence[SandboxMetrics]:
        """On the sandbox's node."""
        node_id = await self._node_of(sandbox_id)
        return await self._call(node_id, lambda c: c.metrics(sandbox_id, start=start, end=end),
                                doing=f"sandbox {sandbox_id}'s metrics were read")  # fmt: skip

    async def logs(self, sandbox_id: SandboxID) -> Sequence[SandboxLogLine]:
        """On the sandbox's node."""
        node_id = await self._node_of(sandbox_id)
        return await self._call(node_id, lambda c: c.logs(sandbox_id),
                                doing=f"sandbox {sandbox_id}'s logs were read")  # fmt: skip

    async def reconcile(
        self, known: Sequence[SandboxID], *, paused: Sequence[SandboxID]
    ) -> ReconciledNode:
        """Not routable: a node is reconciled through its own client when it registers."""
        raise InvalidArgumentError("reconcile one node through its own client")


class ClusterTemplates:
    """``TemplateBuilder`` of a cluster's api that was handed no builder: an import runs on
    a node chosen from the nodes table (:meth:`import_image`); deletes go to every node
    holding the template (:meth:`NodeRouter.delete_template`)."""

    def __init__(self, router: NodeRouter, *, watch_s: float = 2.0) -> None:
        self._router = router
        #: How often the importing node's row is read: once it is ``lost`` (its lease and
        #: grace passed: frozen, cut off) the import is given up there, since its stream,
        #: which may be silent for long while a layer is unpacked, has no read timeout.
        self._watch_s = watch_s

    async def _on_node_while_alive(
        self, node_id: NodeID, request: ImageImport, progress: ImportProgress | None
    ) -> ImportedImage:
        work = asyncio.ensure_future(self._router.import_on(node_id, request, progress=progress))
        try:
            while True:
                done, _ = await asyncio.wait({work}, timeout=self._watch_s)
                if done:
                    return work.result()
                if await self._router.is_lost(node_id):
                    raise UnavailableError(f"node {node_id} was lost mid-import")
        finally:
            if not work.done():
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)

    async def import_image(
        self, request: ImageImport, *, progress: ImportProgress | None = None
    ) -> ImportedImage:
        """On a ready node with the most free disk (and room for ``request.disk_mb``),
        following its progress; the answer names the node (the api records it as the
        artifact's holder with the template's row). A node that does not answer (lost
        mid-import) drops its client and the import runs on the next one; the node's
        import is idempotent by fingerprint, so a re-run costs at worst the work lost. A
        node that stops answering without closing the stream is given up once the store
        marks it ``lost``."""
        nodes = await self._router.import_candidates(request.disk_mb)
        if not nodes:
            raise UnavailableError("no ready node with free disk to import the image on")
        last: UnavailableError | None = None
        for node_id in nodes:
            try:
                made = await self._on_node_while_alive(node_id, request, progress)
            except UnavailableError as exc:
                _log.warning("import of %s: node %s did not answer (%s); trying another",
                             request.name, node_id, exc)  # fmt: skip
                last = exc
                continue
            return dataclasses.replace(made, node_id=node_id)
        assert last is not None
        raise UnavailableError(
            f"no node could import the image (the last said: {last.public_message})"
        ) from last

    async def delete(self, name: str) -> None:
        """On every holder (a holder that does not answer: when it is back)."""
        await self._router.delete_template(name)
