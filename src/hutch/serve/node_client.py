"""``LocalNodeClient``: the api's ``NodeClient`` Protocol over an in-process ``SandboxManager``.

This is the seam where the node's vocabulary (``SandboxRequest``, ``RunningSandbox``) becomes
the api's (``SandboxSpec``, ``PlacedSandbox``). It also keeps the proxy's catalog current:
a sandbox becomes routable only once envd answered, and stops being routable *before* the
node tears it down, so the proxy never forwards into a half-destroyed network.

Template ids: ``hutch serve`` seeds each on-disk template into the store with id = alias =
its directory name (``serve/templates.py``), so ``spec.template_id`` is the node's name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from hutch.api.service.ports import PlacedSandbox, SandboxLogLine, SandboxMetrics, SandboxSpec
from hutch.node.sandbox.manager import SandboxManager
from hutch.node.sandbox.models import SandboxNotFoundError, SandboxRequest
from hutch.proxy.catalog import InMemorySandboxCatalog
from hutch.serve.catalog import route_for
from hutch.shared.errors import NotFoundError
from hutch.shared.ids import NodeID, SandboxID


class LocalNodeClient:
    """A :class:`hutch.api.service.ports.NodeClient` for the node in this process."""

    def __init__(
        self, manager: SandboxManager, catalog: InMemorySandboxCatalog, *, node_id: NodeID
    ) -> None:
        self._manager = manager
        self._catalog = catalog
        self._node_id = node_id

    @property
    def node_id(self) -> NodeID:
        """See ``NodeClient.node_id``."""
        return self._node_id

    async def create(self, spec: SandboxSpec) -> PlacedSandbox:
        """Start the sandbox on the node, then publish its route to the proxy."""
        running = await self._manager.create(
            SandboxRequest(
                sandbox_id=spec.sandbox_id,
                template=spec.template_id,
                env_vars=dict(spec.env_vars),
                access_token=spec.envd_access_token,
                cpu_count=spec.cpu_count,
                memory_mb=spec.memory_mb,
                allow_internet=spec.allow_internet,
                metadata=dict(spec.metadata),
            )
        )
        self._catalog.put(
            route_for(spec.sandbox_id, str(running.address), spec.envd_access_token)
        )
        return PlacedSandbox(
            sandbox_id=spec.sandbox_id, node_id=self._node_id, address=str(running.address)
        )

    async def kill(self, sandbox_id: SandboxID) -> None:
        """Unroute first, then destroy; idempotent like the manager's ``kill``."""
        self._catalog.remove(sandbox_id)
        await self._manager.kill(sandbox_id)

    async def list_running(self) -> Sequence[SandboxID]:
        """See ``NodeClient.list_running``."""
        return [SandboxID(s.sandbox_id) for s in self._manager.list()]

    async def set_metadata(self, sandbox_id: SandboxID, metadata: Mapping[str, str]) -> None:
        """See ``NodeClient.set_metadata``."""
        try:
            self._manager.set_metadata(sandbox_id, metadata)
        except SandboxNotFoundError as exc:
            raise NotFoundError(f"sandbox {sandbox_id} is not running here") from exc

    async def metrics(
        self, sandbox_id: SandboxID, *, start: datetime | None, end: datetime | None
    ) -> Sequence[SandboxMetrics]:
        """No samples yet: the node keeps no metrics history (docs/serve.md)."""
        try:
            self._manager.get(sandbox_id)
        except SandboxNotFoundError as exc:
            raise NotFoundError(f"sandbox {sandbox_id} is not running here") from exc
        return []

    async def logs(
        self, sandbox_id: SandboxID, *, start: datetime | None, limit: int
    ) -> Sequence[SandboxLogLine]:
        """Empty: the node does not expose sandbox logs yet."""
        return []
