"""``CatalogRoutes``: the api's ``SandboxRoutes`` port over the proxy's in-memory catalog.

The api says where each sandbox is (``api/service/routing.py`` on create, pause, resume and
kill; ``api/service/reconcile.py`` for the sandboxes a restart adopted); this adapter turns
that into the proxy's own ``SandboxRoute``. The route carries the envd access token so that a
signed ``/files`` URL without an ``E2b-Sandbox-Id`` header still finds its sandbox (only
that sandbox's token can have made the signature).
"""

from __future__ import annotations

import dataclasses

from hutch.api.service.ports import SandboxRoute
from hutch.proxy.catalog import InMemorySandboxCatalog
from hutch.proxy.catalog import SandboxRoute as ProxyRoute
from hutch.shared.ids import SandboxID


class CatalogRoutes:
    """Satisfies ``hutch.api.service.ports.SandboxRoutes`` for ``hutch serve``'s proxy."""

    def __init__(self, catalog: InMemorySandboxCatalog) -> None:
        self._catalog = catalog

    async def publish(self, route: SandboxRoute) -> None:
        """Route envd and every port of the sandbox to its private address (one node:
        ``route.node_id`` is the local one)."""
        self._catalog.put(
            ProxyRoute(
                sandbox_id=route.sandbox_id,
                host=route.address,
                envd_access_token=route.envd_access_token,
                running=route.running,
                auto_resume=route.auto_resume,
                traffic_access_token=route.traffic_access_token,
                mask_request_host=route.mask_request_host,
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
