"""The proxy role's Prometheus metrics (docs/observability.md has the whole list).

Outcomes are a small fixed set; statuses are HTTP codes; never a sandbox id or a port.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram

_BUCKETS: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REQUESTS = Counter(
    "hutch_proxy_requests_total",
    "Proxied HTTP requests by outcome (proxied, refused, upstream_error, client_gone) and "
    "the status answered.",
    ["outcome", "status"],
)
UPSTREAM_SECONDS = Histogram(
    "hutch_proxy_upstream_duration_seconds",
    "From sending a request upstream (to envd or a sandbox port) to its response headers.",
    buckets=_BUCKETS,
)
BYTES = Counter(
    "hutch_proxy_bytes_total",
    "Body bytes relayed over HTTP: in (client to sandbox), out (sandbox to client).",
    ["direction"],
)
WEBSOCKETS = Counter(
    "hutch_proxy_websocket_sessions_total",
    "WebSocket upgrades by outcome (relayed, refused).",
    ["outcome"],
)
WEBSOCKETS_OPEN = Gauge("hutch_proxy_websocket_sessions_open", "WebSocket sessions being relayed.")
AUTO_RESUMES = Counter(
    "hutch_proxy_auto_resumes_total",
    "Paused auto-resume sandboxes woken by traffic, by outcome (resumed, failed, timeout).",
    ["outcome"],
)
