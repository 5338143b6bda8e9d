"""``TelemetrySettings``: how every role logs, exposes metrics and exports traces.

Read once by each role's entry point (``hutch serve``, ``hutch node``, ...) from ``HUTCH_*``
and handed to :func:`hutch.shared.logging.configure_logging` and
:mod:`hutch.shared.telemetry` (docs/observability.md, ADR 0020).
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TelemetrySettings(BaseSettings):
    """Logs, metrics and traces of one process."""

    model_config = SettingsConfigDict(env_prefix="HUTCH_", frozen=True, extra="ignore")

    #: ``json``: one JSON object a line (for a log shipper); ``console``: readable lines.
    log_format: Literal["console", "json"] = "console"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    #: Prometheus ``/metrics`` on a port of its own; None (the default): not served. The
    #: listener is apart from the API's so it can stay on loopback or a private network
    #: while the API is public; it has no authentication.
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    #: Where OTLP/HTTP traces go (``http://collector:4318``); None: no exporter, and the
    #: tracer is OpenTelemetry's no-op. ``OTEL_EXPORTER_OTLP_ENDPOINT`` is read too.
    otlp_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices("HUTCH_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"),
    )
    #: ``service.name`` of the traces; default: the role (``hutch-serve``, ``hutch-node``).
    service_name: str | None = Field(
        default=None,
        validation_alias=AliasChoices("HUTCH_SERVICE_NAME", "OTEL_SERVICE_NAME"),
    )
