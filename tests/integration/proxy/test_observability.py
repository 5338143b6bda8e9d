"""The proxy's side of issue 17 (docs/observability.md): a request id for every proxied
request, taken from the client or made, returned to it and passed upstream (so a node's own
proxy behind the edge logs the same id), and the proxy's metrics counting the exchange."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
from prometheus_client import REGISTRY

from hutch.proxy.catalog import SandboxRoute
from hutch.shared.ids import SandboxID
from tests.integration.proxy.conftest import Handler, RunningProxy, Upstream

SID = SandboxID("isbxobs1")


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_proxy_request_id_is_kept_or_made_returned_and_sent_upstream(
    proxy: RunningProxy, start_upstream: Callable[[Handler], Upstream]
) -> None:
    upstream = start_upstream()  # type: ignore[call-arg]
    proxy.catalog.put(SandboxRoute(SID, "127.0.0.1", ports={8000: upstream.port}))
    where = {"E2b-Sandbox-Id": SID, "E2b-Sandbox-Port": "8000"}

    kept = httpx.post(proxy.url + "/x", headers={**where, "X-Request-Id": "edge-1"}, content=b"ab")
    assert kept.headers["x-request-id"] == "edge-1"
    assert dict(kept.json()["headers"])["x-request-id"] == "edge-1"

    made = httpx.get(proxy.url + "/x", headers=where)
    request_id = made.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    assert dict(made.json()["headers"])["x-request-id"] == request_id

    # A header that would inject into log lines is replaced, not passed on.
    bad = httpx.get(proxy.url + "/x", headers={**where, "X-Request-Id": "a b\tc" * 40})
    assert re.fullmatch(r"[0-9a-f]{32}", bad.headers["x-request-id"])
    # A refused request still gets one.
    refused = httpx.get(proxy.url + "/x", headers={**where, "E2b-Sandbox-Id": "nosuchsbx"})
    assert refused.status_code == 502  # E2B's "sandbox not found" answer
    assert refused.headers["x-request-id"]


def test_proxy_metrics_count_outcomes_and_bytes(
    proxy: RunningProxy, start_upstream: Callable[[Handler], Upstream]
) -> None:
    upstream = start_upstream()  # type: ignore[call-arg]
    proxy.catalog.put(SandboxRoute(SID, "127.0.0.1", ports={8000: upstream.port}))
    where = {"E2b-Sandbox-Id": SID, "E2b-Sandbox-Port": "8000"}
    proxied = _value("hutch_proxy_requests_total", outcome="proxied", status="200")
    refused = _value("hutch_proxy_requests_total", outcome="refused", status="502")
    sent = _value("hutch_proxy_bytes_total", direction="in")

    assert httpx.post(proxy.url + "/x", headers=where, content=b"x" * 1000).status_code == 200
    assert httpx.get(proxy.url + "/x", headers={**where, "E2b-Sandbox-Id": "nosuchsbx"}
                     ).status_code == 502  # fmt: skip

    # Counted just after the answer is sent: the next request's answer orders them.
    httpx.get(proxy.url + "/x", headers=where)
    assert _value("hutch_proxy_requests_total", outcome="proxied", status="200") >= proxied + 1
    assert _value("hutch_proxy_requests_total", outcome="refused", status="502") == refused + 1
    assert _value("hutch_proxy_bytes_total", direction="in") - sent >= 1000
