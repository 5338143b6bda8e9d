"""``Observe``: the request middleware of the api and the node API, for logs, metrics and
traces (each role hands in its own counter, histogram and access logger).

Per request: the ``X-Request-Id`` it brought (or a fresh one) is bound for every log line
of the request and returned on the response; a SERVER span (child of an incoming
``traceparent``) wraps it; at the end one access line is logged and the request counted
and timed by **route template** (``/sandboxes/{sandbox_id}``, never the raw path).
A pure ASGI middleware: Starlette's ``BaseHTTPMiddleware`` would run the app in another
context, and what handlers bind would be lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.routing import Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hutch.shared import logging as hlog
from hutch.shared import telemetry

_HEADER = hlog.REQUEST_ID_HEADER.lower().encode()


def match_route(app: ASGIApp | None, scope: Scope) -> tuple[str, dict[str, Any]]:
    """The path template and parameters of the route ``scope`` matches, or
    ``("unmatched", {})``; matched before the app runs, so the ids are bound for every line."""
    router = getattr(app, "router", None)
    if isinstance(router, Router):
        for route in router.routes:
            match, child = route.matches(scope)
            if match is Match.FULL:
                return str(getattr(route, "path", "unmatched")), dict(child.get("path_params", {}))
    return "unmatched", {}


class Observe:
    """See the module docstring: ``requests`` is a counter labelled route, method, status;
    ``seconds`` a histogram labelled route, method; ``fields`` are bound on every request
    (the node's ``node_id``); ``span_prefix`` names the role in span names."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        requests: Counter,
        seconds: Histogram,
        access_log: str,
        span_prefix: str,
        fields: Mapping[str, str] | None = None,
        quiet_routes: frozenset[str] = frozenset({"/health"}),
    ) -> None:
        self._app = app
        self._requests = requests
        self._seconds = seconds
        self._log = logging.getLogger(access_log)
        self._prefix = span_prefix
        self._fields = dict(fields or {})
        self._quiet = quiet_routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        incoming = next((v for k, v in scope.get("headers", ()) if k == _HEADER), None)
        request_id = hlog.request_id_from(incoming)
        method = scope["method"]
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != _HEADER]
                headers.append((_HEADER, request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        route, params = match_route(scope.get("app"), scope)
        ids = {k: v for k, v in params.items() if k == "sandbox_id"}
        with (
            hlog.request_scope(request_id, **self._fields, **ids) as fields,
            telemetry.server_span(
                f"{self._prefix} {method}",
                headers=scope.get("headers", ()),
                attributes={"http.request.method": method, "hutch.request_id": request_id},
            ) as span,
        ):
            try:
                await self._app(scope, receive, send_with_id)
            finally:
                elapsed = time.perf_counter() - started
                span.update_name(f"{self._prefix} {method} {route}")
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                for key in ("sandbox_id", "team_id", "template"):
                    if key in fields:
                        span.set_attribute(f"hutch.{key}", fields[key])
                self._requests.labels(route, method, str(status)).inc()
                self._seconds.labels(route, method).observe(elapsed)
                if route not in self._quiet:
                    self._log.info(
                        "%s %s %d %.1f ms", method, route, status, elapsed * 1000,
                        extra={"status": status, "duration_ms": round(elapsed * 1000, 1)},
                    )  # fmt: skip
