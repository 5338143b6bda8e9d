"""Metrics exposition and tracing plumbing shared by every role (docs/observability.md).

* :class:`MetricsServer`: Prometheus ``/metrics`` (``prometheus_client``'s default registry,
  where each role's ``metrics.py`` registers) on a port of its own, served by uvicorn in the
  role's own event loop, so collectors that read in-memory state run on the loop's thread
  and never race it.
* :func:`configure_tracing`: an OpenTelemetry SDK provider with an OTLP/HTTP exporter when
  an endpoint is configured; otherwise nothing is installed and OpenTelemetry's API stays
  the no-op it is by default (a span costs a few attribute lookups).
* :func:`server_span` / :func:`inject`: W3C ``traceparent`` in and out, for the node wire
  and the api; :data:`TRACER_NAME` is what every span is made under.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Iterable, Iterator, MutableMapping
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from hutch.shared.settings import TelemetrySettings

log = logging.getLogger("hutch.telemetry")

TRACER_NAME: Final = "hutch"


def tracer() -> trace.Tracer:
    """The tracer every hutch span is made with (a proxy to the installed provider)."""
    return trace.get_tracer(TRACER_NAME)


def configure_tracing(settings: TelemetrySettings, *, service: str) -> Callable[[], None]:
    """Install an SDK tracer provider exporting OTLP/HTTP when ``settings.otlp_endpoint``
    is set; the function that flushes and shuts it down (a no-op when nothing was set)."""
    if not settings.otlp_endpoint:
        return lambda: None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    endpoint = settings.otlp_endpoint.rstrip("/")
    if not endpoint.endswith("/v1/traces"):
        endpoint += "/v1/traces"  # the OTLP/HTTP convention for a base endpoint
    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.service_name or service})
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    log.info("traces: OTLP/HTTP to %s as %s", endpoint, settings.service_name or service)
    return provider.shutdown


def _header_carrier(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in headers}


@contextlib.contextmanager
def server_span(
    name: str, *, headers: Iterable[tuple[bytes, bytes]], attributes: dict[str, Any]
) -> Iterator[trace.Span]:
    """A SERVER span for one incoming request, child of its ``traceparent`` if it has one."""
    parent = propagate.extract(_header_carrier(headers))
    token = otel_context.attach(parent)
    try:
        with tracer().start_as_current_span(
            name, kind=trace.SpanKind.SERVER, attributes=attributes
        ) as span:
            yield span
    finally:
        otel_context.detach(token)


def inject(headers: MutableMapping[str, str]) -> None:
    """Add the current span's ``traceparent`` (and ``tracestate``) to outgoing ``headers``."""
    propagate.inject(headers)


def current_trace_id() -> str | None:
    """The current trace's id in hex, if a span is recording or was propagated in."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


class MetricsServer:
    """``GET /metrics`` on ``host:port`` in the current event loop (see the module docstring)."""

    def __init__(self, server: Any, task: asyncio.Task[None]) -> None:
        self._server = server
        self._task = task

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        sockets = self._server.servers[0].sockets
        return int(sockets[0].getsockname()[1])

    @classmethod
    async def start(cls, *, host: str, port: int) -> MetricsServer:
        """Serve until :meth:`aclose`; raises ``SystemExit`` if the port cannot be bound."""
        import uvicorn
        from prometheus_client import make_asgi_app

        config = uvicorn.Config(
            _only_metrics(make_asgi_app()),
            host=host,
            port=port,
            lifespan="off",
            log_level="warning",
            access_log=False,
            server_header=False,
        )
        server = _QuietServer(config)
        task = asyncio.create_task(server.serve(), name="hutch-metrics")
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if task.done():
            raise SystemExit(f"hutch: the metrics port {host}:{port} could not be bound")
        metrics = cls(server, task)
        log.info("metrics: http://%s:%d/metrics", host, metrics.port)
        return metrics

    async def aclose(self) -> None:
        """Stop serving."""
        self._server.should_exit = True
        await asyncio.gather(self._task, return_exceptions=True)


async def start_metrics(settings: TelemetrySettings) -> MetricsServer | None:
    """:meth:`MetricsServer.start` when ``settings.metrics_port`` is set, else None."""
    if settings.metrics_port is None:
        return None
    return await MetricsServer.start(host=settings.metrics_host, port=settings.metrics_port)


def _only_metrics(app: Any) -> Any:
    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] != "/metrics":
            body = b"not found: the metrics are at /metrics\n"
            await send({"type": "http.response.start", "status": 404,
                        "headers": [(b"content-type", b"text/plain")]})  # fmt: skip
            await send({"type": "http.response.body", "body": body})
            return
        await app(scope, receive, send)

    return asgi


def _quiet_server_class() -> Any:
    import uvicorn

    class Quiet(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield  # the role's own loop owns SIGTERM/SIGINT

    return Quiet


class _QuietServer:
    """A uvicorn server that leaves the process's signals alone (built lazily)."""

    def __new__(cls, config: Any) -> Any:
        return _quiet_server_class()(config)


def run_observed(role: Coroutine[Any, Any, None], *, service: str) -> None:
    """A role's blocking entry point: logging set up once from ``TelemetrySettings``, then
    ``role`` run with its ``/metrics`` port and trace exporter (docs/observability.md)."""
    from hutch.shared.logging import configure_logging

    settings = TelemetrySettings()
    configure_logging(format=settings.log_format, level=settings.log_level)
    asyncio.run(_observed(role, settings, service=service))


async def _observed(
    role: Coroutine[Any, Any, None], settings: TelemetrySettings, *, service: str
) -> None:
    stop_tracing = configure_tracing(settings, service=service)
    try:
        metrics_server = await start_metrics(settings)
    except BaseException:
        role.close()
        stop_tracing()
        raise
    try:
        await role
    finally:
        if metrics_server is not None:
            await metrics_server.aclose()
        stop_tracing()
