"""``ClusterSettings``: what the separate role processes agree on, read once from ``HUTCH_*``.

``HUTCH_DATABASE_URL`` (PostgreSQL: NOTIFY carries routes to the edges), the cluster token
(``HUTCH_CLUSTER_TOKEN`` or ``HUTCH_CLUSTER_TOKEN_FILE``: nodes and node proxies require it,
apis and edges send it) and, for nodes that do not register themselves (``hutch node
--register``, ADR 0025), a fixed list in ``HUTCH_CLUSTER_NODES``: ``[{"id": "n1", "api":
"http://10.0.0.5:5007", "proxy": "10.0.0.5:5008"}]``; unset, the nodes table is the list.
The edge also names the apis it wakes sandboxes through (``HUTCH_EDGE_API_URLS``,
comma-separated).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class NodeAddress(BaseModel):
    """One node as apis and edges reach it."""

    model_config = {"frozen": True, "extra": "forbid"}

    id: str = Field(min_length=1, max_length=63)
    #: The node API's base URL (``hutch node --listen``).
    api: str = Field(min_length=1)
    #: The node proxy's ``HOST:PORT`` (``hutch node --proxy-listen``).
    proxy: str = Field(min_length=1)

    def proxy_host_port(self) -> tuple[str, int]:
        """``proxy`` split; ValueError when it is not ``HOST:PORT``."""
        host, sep, port = self.proxy.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise ValueError(f"node {self.id}: proxy {self.proxy!r} is not HOST:PORT")
        return host.strip("[]"), int(port)


class ClusterSettings(BaseSettings):
    """See the module docstring."""

    model_config = SettingsConfigDict(env_prefix="HUTCH_", frozen=True, extra="ignore")

    database_url: str | None = None
    cluster_token: SecretStr | None = None
    cluster_token_file: Path | None = None
    cluster_nodes: list[NodeAddress] = Field(default_factory=list)
    #: The edge: where it listens, and the apis it asks to resume auto-resume sandboxes.
    proxy_host: str = "0.0.0.0"
    proxy_port: int = Field(default=49983, ge=0, le=65535)
    edge_api_urls: str = ""

    @field_validator("cluster_nodes", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return [] if value in ("", None) else value

    def token(self) -> str:
        """The cluster token; ValueError when none is set (every role process needs it)."""
        if self.cluster_token is not None:
            token = self.cluster_token.get_secret_value().strip()
        elif self.cluster_token_file is not None:
            token = self.cluster_token_file.read_text().strip()
        else:
            raise ValueError(
                "no cluster token: set HUTCH_CLUSTER_TOKEN or HUTCH_CLUSTER_TOKEN_FILE"
            )
        if not token:
            raise ValueError("the cluster token is empty")
        return token

    def postgres_url(self) -> str:
        """``database_url``; ValueError unless PostgreSQL (SQLite means one process:
        ``hutch serve``)."""
        url = self.database_url or ""
        if not url.startswith("postgresql"):
            raise ValueError(
                "roles as processes share a PostgreSQL store: set HUTCH_DATABASE_URL to "
                "postgresql+asyncpg://... (SQLite means one process: use hutch serve)"
            )
        return url

    def api_urls(self) -> list[str]:
        """``edge_api_urls`` split."""
        return [u.strip().rstrip("/") for u in self.edge_api_urls.split(",") if u.strip()]
