"""``DashboardSettings``: the dashboard's configuration, read once from ``HUTCH_DASHBOARD_*``."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class DashboardSettings(BaseSettings):
    """Configuration of the web dashboard (docs/dashboard.md)."""

    model_config = SettingsConfigDict(env_prefix="HUTCH_DASHBOARD_", frozen=True, extra="ignore")

    #: Serve ``/dashboard`` at all.
    enabled: bool = True
    #: How long a sign-in lasts (the cookie's ``Max-Age`` and the sealed expiry).
    session_ttl_s: int = Field(default=8 * 3600, ge=60, le=30 * 86_400)
    #: The sandbox proxy the envd and terminal bridges go through. ``hutch serve``: its own
    #: proxy; ``hutch api``: the edge (``hutch proxy``) as this api reaches it; unset there,
    #: the bridges answer 503.
    sandbox_url: str | None = None
    #: The key sessions are sealed with (any text); unset: made once and kept in the store,
    #: so every api opens every other api's sessions.
    secret: SecretStr | None = None
    #: The built app; default the package's ``static/``.
    static_dir: Path | None = None

    def effective_static_dir(self) -> Path:
        """Where the built app is."""
        return self.static_dir or Path(__file__).parent / "static"
