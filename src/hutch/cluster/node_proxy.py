"""A node's own proxy (``hutch node --proxy-listen``): how edges on other hosts reach this
node's sandboxes, whose addresses are private to the host (ADR 0019).

The same ``hutch.proxy`` app as every proxy, over :class:`NodeLocalCatalog` (the sandboxes
this node runs, read from its ``SandboxManager`` on each request: no cache, so a sandbox
the node killed or paused is "not found" at once), admitting only callers that carry the
cluster token in ``X-Hutch-Node-Token`` (dropped before the sandbox sees the request).
Routing is by ``E2b-Sandbox-Id``/``E2b-Sandbox-Port``, which the edge always sets; no
wake here (the edge asks an api), and no routing by signature (the edge resolves it).
"""

from __future__ import annotations

import uvicorn

from hutch.node.sandbox.manager import SandboxManager
from hutch.node.sandbox.models import SandboxNotFoundError
from hutch.proxy.catalog import SandboxRoute
from hutch.proxy.runner import create_config
from hutch.shared.ids import SandboxID


class NodeLocalCatalog:
    """Satisfies ``hutch.proxy.catalog.SandboxCatalog`` over one node's sandboxes."""

    def __init__(self, manager: SandboxManager) -> None:
        self._manager = manager

    async def lookup(self, sandbox_id: SandboxID) -> SandboxRoute | None:
        """The sandbox's private address, running unless paused."""
        try:
            sandbox = self._manager.get(sandbox_id)
        except SandboxNotFoundError:
            return None
        return SandboxRoute(sandbox_id=sandbox_id, host=str(sandbox.address),
                            running=sandbox.paused is None)  # fmt: skip

    async def lookup_by_file_signature(
        self, query_string: bytes, method: str
    ) -> SandboxRoute | None:
        """None: edges always name the sandbox."""
        return None

    async def wake(self, sandbox_id: SandboxID) -> SandboxRoute | None:
        """None: waking is the edge's (through an api)."""
        return None


def node_proxy_config(
    manager: SandboxManager, *, host: str, port: int, token: str
) -> uvicorn.Config:
    """The node proxy's uvicorn config."""
    return create_config(NodeLocalCatalog(manager), host=host, port=port, require_token=token)
