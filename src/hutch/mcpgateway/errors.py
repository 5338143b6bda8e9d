"""The gateway's errors: each says which MCP server it is about."""

from __future__ import annotations


class GatewayError(Exception):
    """The gateway cannot start; ``str()`` is the reason shown to the SDK's caller."""


class ConfigError(GatewayError):
    """The ``--config`` JSON is not a valid set of MCP servers."""


class ServerStartError(GatewayError):
    """One MCP server could not be installed or started, or did not initialize."""

    def __init__(self, server: str, reason: str) -> None:
        super().__init__(f"MCP server {server!r} failed to start: {reason}")
        self.server = server
