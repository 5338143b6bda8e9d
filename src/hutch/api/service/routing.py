"""``RoutedNodeClient``: a ``NodeClient`` that keeps the proxy's routes in step with the node.

Wraps any node client (the one ``hutch serve`` wires is an ``HttpNodeClient``). A sandbox
becomes routable only once the node answered its create (envd answered), and stops being
routable **before** the node tears it down, so the proxy never forwards into a
half-destroyed network. A pause keeps the route, marked not running, so that traffic can
wake an auto-resume sandbox; a resume routes again (its address may be new).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from hutch.api.service.ports import (
    NodeClient,
    PlacedSandbox,
    ReconciledNode,
    ResumedSandbox,
    SandboxLogLine,
    SandboxMetrics,
    SandboxRoute,
    SandboxRoutes,
    SandboxSpec,
)
from hutch.shared.egress import EgressPolicy
from hutch.shared.ids import NodeID, SandboxID, TemplateID


def _route(spec: SandboxSpec, placed: PlacedSandbox) -> SandboxRoute:
    """The route to a sandbox of ``spec`` that runs where ``placed`` says."""
    return SandboxRoute(
        sandbox_id=spec.sandbox_id, address=placed.address,
        envd_access_token=spec.envd_access_token, auto_resume=spec.auto_resume,
        node_id=placed.node_id, traffic_access_token=spec.traffic_access_token,
        mask_request_host=spec.mask_request_host,
    )  # fmt: skip


class RoutedNodeClient:
    """See the module docstring; every call not about routes is forwarded as it is."""

    def __init__(self, node: NodeClient, *, routes: SandboxRoutes) -> None:
        self._node = node
        self._routes = routes

    @property
    def node_id(self) -> NodeID:
        """See ``NodeClient.node_id``."""
        return self._node.node_id

    async def create(self, spec: SandboxSpec) -> PlacedSandbox:
        """Start the sandbox, then route to it."""
        placed = await self._node.create(spec)
        await self._routes.publish(_route(spec, placed))
        return placed

    async def kill(self, sandbox_id: SandboxID) -> None:
        """Unroute first, then destroy."""
        await self._routes.withdraw(sandbox_id)
        await self._node.kill(sandbox_id)

    async def pause(self, sandbox_id: SandboxID, *, keep_memory: bool) -> bool:
        """Pause; the route stays, marked not running."""
        kept = await self._node.pause(sandbox_id, keep_memory=keep_memory)
        await self._routes.mark_paused(sandbox_id)
        return kept

    async def resume(self, spec: SandboxSpec, *, keep_memory: bool) -> ResumedSandbox:
        """Resume, then route to where it runs now."""
        resumed = await self._node.resume(spec, keep_memory=keep_memory)
        await self._routes.publish(_route(spec, resumed.placed))
        return resumed

    async def snapshot(self, sandbox_id: SandboxID, *, snapshot_id: TemplateID) -> None:
        """See ``NodeClient.snapshot``."""
        await self._node.snapshot(sandbox_id, snapshot_id=snapshot_id)

    async def delete_snapshot(self, snapshot_id: TemplateID) -> None:
        """See ``NodeClient.delete_snapshot``."""
        await self._node.delete_snapshot(snapshot_id)

    async def list_running(self) -> Sequence[SandboxID]:
        """See ``NodeClient.list_running``."""
        return await self._node.list_running()

    async def set_metadata(self, sandbox_id: SandboxID, metadata: Mapping[str, str]) -> None:
        """See ``NodeClient.set_metadata``."""
        await self._node.set_metadata(sandbox_id, metadata)

    async def set_network(self, sandbox_id: SandboxID, policy: EgressPolicy) -> None:
        """See ``NodeClient.set_network``."""
        await self._node.set_network(sandbox_id, policy)

    async def metrics(
        self, sandbox_id: SandboxID, *, start: datetime | None, end: datetime | None
    ) -> Sequence[SandboxMetrics]:
        """See ``NodeClient.metrics``."""
        return await self._node.metrics(sandbox_id, start=start, end=end)

    async def logs(self, sandbox_id: SandboxID) -> Sequence[SandboxLogLine]:
        """See ``NodeClient.logs``."""
        return await self._node.logs(sandbox_id)

    async def reconcile(
        self, known: Sequence[SandboxID], *, paused: Sequence[SandboxID]
    ) -> ReconciledNode:
        """Reconcile; routes are given back by ``service/reconcile.py`` (it has the rows)."""
        return await self._node.reconcile(known, paused=paused)


class NoRoutes:
    """``SandboxRoutes`` of an api with no proxy in its process (scale-out: the edge proxy
    finds routes in the store): every call is a no-op."""

    async def publish(self, route: SandboxRoute) -> None:
        """Nothing to tell."""

    async def mark_paused(self, sandbox_id: SandboxID) -> None:
        """Nothing to tell."""

    async def withdraw(self, sandbox_id: SandboxID) -> None:
        """Nothing to tell."""
