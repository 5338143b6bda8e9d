"""``CatalogRoutes``: the api's ``SandboxRoutes`` port over the proxy's in-memory catalog.

The api says where each sandbox is (``api/service/routing.py`` on create, pause, resume and
kill; ``api/service/reconcile.py`` for the sandboxes a restart adopted); this adapter turns
that into the proxy's ``SandboxRoute``. The route carries the envd access token so that a
signed ``/files`` URL without an ``E2b-Sandbox-Id`` header still finds its sandbox (only
that sandbox's token can have made the signature).
"""

from __future__ import annotations

import dataclasses

from hutch.proxy.catalog import InMemorySandboxCatalog, SandboxRoute
from hutch.shared.ids import NodeID, SandboxID


class CatalogRoutes:
    """Satisfies ``hutch.api.service.ports.SandboxRoutes`` for ``hutch serve``'s proxy."""

    def __init__(self, catalog: InMemorySandboxCatalog) -> None:
        self._catalog = catalog

    async def publish(
        self,
        sandbox_id: SandboxID,
        *,
        address: str,
        envd_access_token: str | None,
        running: bool = True,
        auto_resume: bool = False,
        node_id: NodeID | None = None,
        traffic_access_token: str | None = None,
        mask_request_host: str | None = None,
    ) -> None:
        """Route envd and every port of the sandbox to its private address (one node:
        ``node_id`` is the local one)."""
        self._catalog.put(
            SandboxRoute(
                sandbox_id=sandbox_id,
                host=address,
                envd_access_token=envd_access_token,
                running=running,
                auto_resume=auto_resume,
                traffic_access_token=traffic_access_token,
                mask_request_host=mask_request_host,
            )
        )

    async def mark_paused(self, sandbox_id: SandboxID) -> None:
        """Keep the route, not running (traffic may wake an auto-resume sandbox)."""
        route = self._catalog.find(sandbox_id)
        if route is not None:
            self._catalog.put(dataclasses.replace(route, running=False))

    async def withdraw(self, sandbox_id: SandboxID) -> None:
        """Forget the route."""
        self._catalog.remove(sandbox_id)
