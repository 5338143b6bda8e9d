"""``ObservedTransport``: the node wire's client side of logs, metrics and traces.

Wraps the httpx transport of ``HttpNodeClient``: every call to a node carries the request's
``X-Request-Id`` and the W3C ``traceparent`` of a CLIENT span around it (so the node's
spans and log lines join the api's), and is timed by route template
(``hutch_api_node_call_duration_seconds``).
"""

from __future__ import annotations

import re
import time

import httpx
from opentelemetry import trace

from hutch.api import metrics
from hutch.shared import logging as hlog
from hutch.shared import telemetry

_IDS = (
    (re.compile(r"^(/v1/(?:sandboxes|snapshots|build-files))/[^/]+"), r"\1/{id}"),
    (re.compile(r"^/v1/templates/(?!import$)[^/]+"), "/v1/templates/{name}"),
)


def route_of(path: str) -> str:
    """A node API path as its route template (ids replaced)."""
    for pattern, replacement in _IDS:
        path = pattern.sub(replacement, path)
    return path


class ObservedTransport(httpx.AsyncBaseTransport):
    """See the module docstring."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        route = route_of(request.url.path)
        request_id = hlog.current_request_id()
        if request_id is not None:
            request.headers[hlog.REQUEST_ID_HEADER] = request_id
        outcome = "error"
        started = time.perf_counter()
        with telemetry.tracer().start_as_current_span(
            f"node {request.method} {route}", kind=trace.SpanKind.CLIENT,
            attributes={"http.request.method": request.method, "http.route": route},
        ) as span:  # fmt: skip
            carrier: dict[str, str] = {}
            telemetry.inject(carrier)
            for key, value in carrier.items():
                request.headers[key] = value
            try:
                response = await self._inner.handle_async_request(request)
                outcome = str(response.status_code)
                span.set_attribute("http.response.status_code", response.status_code)
                return response
            finally:
                metrics.NODE_CALL_SECONDS.labels(request.method, route, outcome).observe(
                    time.perf_counter() - started
                )

    async def aclose(self) -> None:
        await self._inner.aclose()
