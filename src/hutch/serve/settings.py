"""``ServeSettings``: what ``hutch serve`` itself decides, read once from ``HUTCH_*``.

The roles keep their own settings classes (``ApiSettings``, ``NodeSettings``); this one holds
the few values they must agree on (home, ports, domain, runtime) and derives theirs from it,
so one ``--home`` moves the database, templates, sandboxes and envd bundle together. Every
other knob stays with its role (``HUTCH_DATABASE_URL``, ``HUTCH_NODE_BRIDGE``, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from hutch.api.settings import ApiSettings
from hutch.dashboard.settings import DashboardSettings
from hutch.node.settings import NodeSettings


class ServeSettings(BaseSettings):
    """Configuration of the single-process ``hutch serve``."""

    model_config = SettingsConfigDict(env_prefix="HUTCH_", frozen=True, extra="ignore")

    home: Path = Path("/var/lib/hutch")
    host: str = "0.0.0.0"
    api_port: int = Field(default=3000, ge=0, le=65535)
    proxy_port: int = Field(default=49983, ge=0, le=65535)
    #: Returned at create as ``domain`` (``<port>-<id>.<domain>`` hosts); None: not set.
    domain: str | None = None
    #: The OCI runtime; None leaves it to ``HUTCH_NODE_RUNTIME`` (default runc).
    runtime: Literal["runc", "runsc"] | None = None
    #: Recorded on every sandbox row as the node that runs it.
    node_id: str = "local"

    def api_settings(self) -> ApiSettings:
        """The api role's settings (its other fields still come from ``HUTCH_*``)."""
        return ApiSettings(
            home=self.home.resolve(),
            api_host=self.host,
            api_port=self.api_port,
            proxy_port=self.proxy_port,
            domain=self.domain,
        )

    def node_settings(self) -> NodeSettings:
        """The node role's settings (its other fields still come from ``HUTCH_NODE_*``)."""
        values: dict[str, Any] = {"home": self.home.resolve()}
        if self.runtime is not None:
            values["runtime"] = self.runtime
        return NodeSettings(**values)

    def dashboard_settings(self) -> DashboardSettings:
        """The dashboard's settings (``HUTCH_DASHBOARD_*``); its bridges use serve's proxy."""
        return DashboardSettings()
