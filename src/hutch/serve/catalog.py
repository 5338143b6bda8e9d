"""Feeding the proxy's in-memory catalog.

Two sources, one shape: create/kill events from :class:`~hutch.serve.node_client.LocalNodeClient`
while serving, and the store's rows for the sandboxes a restart adopted. The route carries
the envd access token so that a signed ``/files`` URL without an ``E2b-Sandbox-Id`` header
still finds its sandbox (only that sandbox's token can have made the signature).
"""

from __future__ import annotations

from hutch.proxy.catalog import SandboxRoute
from hutch.shared.ids import SandboxID


def route_for(sandbox_id: str, address: str, envd_access_token: str | None) -> SandboxRoute:
    """The proxy route of one running sandbox (envd and every port at its private IP)."""
    return SandboxRoute(
        sandbox_id=SandboxID(sandbox_id), host=address, envd_access_token=envd_access_token
    )
