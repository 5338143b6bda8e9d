"""Operators' view of a real ``hutch serve`` (issue 17, docs/observability.md): its
Prometheus ``/metrics`` after official-SDK traffic, and one request id followed through
the JSON log lines of every role it crossed.

The session's serve runs with ``HUTCH_METRICS_PORT`` and ``HUTCH_LOG_FORMAT=json``
(``serveproc.Serve``). Counters are compared before and after, so the other tests' traffic
on the same serve does not matter.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass

import httpx
import pytest
from e2b import Sandbox, SandboxException
from prometheus_client.parser import text_string_to_metric_families

from .serveproc import Serve

pytestmark = pytest.mark.root


@dataclass
class Scrape:
    """One parsed exposition: ``(name, labels) -> value`` for every sample."""

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]
    families: dict[str, str]

    def value(self, name: str, **labels: str) -> float:
        """The sum of ``name``'s samples whose labels include ``labels`` (0 if none)."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and wanted <= ls)

    def label_values(self) -> set[str]:
        return {value for (_, labels) in self.samples for _, value in labels}


def scrape(serve: Serve) -> Scrape:
    """Parse ``serve``'s ``/metrics`` with the Prometheus text parser."""
    response = httpx.get(serve.metrics_url, timeout=10)
    assert response.status_code == 200, response.text
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    families: dict[str, str] = {}
    for family in text_string_to_metric_families(response.text):
        families[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return Scrape(samples, families)


def _delta(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    return after.value(name, **labels) - before.value(name, **labels)


def test_metrics_move_with_sdk_traffic_and_labels_stay_bounded(serve: Serve) -> None:
    before = scrape(serve)
    sbx = Sandbox.create("busybox", timeout=120)
    try:
        assert sbx.commands.run("echo hi").stdout == "hi\n"
        during = scrape(serve)
        assert during.value("hutch_node_sandboxes", state="running") >= 1
        assert during.value("hutch_node_disk_allocated_bytes") > 0
    finally:
        sbx.kill()
    with pytest.raises(SandboxException, match="404"):
        Sandbox.create("no-such-template-" + secrets.token_hex(4), timeout=60)
    # A request is counted just after its answer is sent: wait for the last one's count.
    deadline = time.monotonic() + 60
    while (after := scrape(serve)).value(
        "hutch_api_requests_total", route="/v2/sandboxes", method="POST", status="404"
    ) == before.value(
        "hutch_api_requests_total", route="/v2/sandboxes", method="POST", status="404"
    ):
        assert time.monotonic() < deadline, "the failed create was never counted"
        time.sleep(0.05)

    create = {"operation": "create", "template": "busybox"}
    assert _delta(before, after, "hutch_sandbox_operations_total", outcome="ok", **create) == 1
    assert _delta(before, after, "hutch_sandbox_operation_duration_seconds_count", **create) == 1
    kill = {"operation": "kill", "outcome": "ok", "template": "busybox"}
    assert _delta(before, after, "hutch_sandbox_operations_total", **kill) == 1
    # The failure by its reason; the caller's template name never becomes a label.
    failed = {"operation": "create", "outcome": "not_found", "template": "other"}
    assert _delta(before, after, "hutch_sandbox_operations_total", **failed) == 1
    for phase in ("checks", "store", "node"):
        name = "hutch_sandbox_create_phase_duration_seconds_count"
        assert _delta(before, after, name, phase=phase) == 1, phase
    # Requests by route template, never the raw path.
    assert _delta(before, after, "hutch_api_requests_total", route="/v2/sandboxes",
                  method="POST", status="201") == 1  # fmt: skip
    assert _delta(before, after, "hutch_api_requests_total", route="/v2/sandboxes",
                  method="POST", status="404") == 1  # fmt: skip
    assert _delta(before, after, "hutch_api_requests_total",
                  route="/sandboxes/{sandbox_id}", method="DELETE", status="204") == 1  # fmt: skip
    # The node's side: its API, the runtime calls and envd's readiness.
    assert _delta(before, after, "hutch_node_requests_total", route="/v1/sandboxes",
                  method="POST", status="201") == 1  # fmt: skip
    for call in ("create", "start", "delete"):
        count = "hutch_node_runtime_call_duration_seconds_count"
        assert _delta(before, after, count, call=call, outcome="ok") >= 1, call
    assert _delta(before, after, "hutch_node_network_call_duration_seconds_count",
                  call="setup", outcome="ok") == 1  # fmt: skip
    assert _delta(before, after, "hutch_node_envd_ready_duration_seconds_count") == 1
    assert _delta(before, after, "hutch_api_node_call_duration_seconds_count",
                  method="POST", route="/v1/sandboxes", outcome="201") == 1  # fmt: skip
    # The proxy relayed the command (a Connect stream to envd), bytes both ways.
    assert _delta(before, after, "hutch_proxy_requests_total", outcome="proxied") >= 1
    assert _delta(before, after, "hutch_proxy_bytes_total", direction="in") > 0
    assert _delta(before, after, "hutch_proxy_bytes_total", direction="out") > 0
    assert _delta(before, after, "hutch_proxy_upstream_duration_seconds_count") >= 1
    assert after.value("hutch_store_query_duration_seconds_count", verb="select") > 0
    assert after.value("hutch_store_pool_connections", state="size") >= 1
    assert after.families["hutch_sandbox_operations"] == "counter"
    assert after.families["hutch_api_request_duration_seconds"] == "histogram"
    # Bounded labels: no sandbox id anywhere, and no value that looks like one.
    values = after.label_values() | during.label_values()
    assert sbx.sandbox_id not in values
    assert not [v for v in values if sbx.sandbox_id in v]
    assert not [v for v in values if re.fullmatch(r"[a-z0-9]{20}", v)]


def test_the_sandbox_gauges_are_sampled_from_the_store(serve: Serve) -> None:
    sbx = Sandbox.create("busybox", timeout=120)
    try:
        deadline = time.monotonic() + 30  # sampled every HUTCH_USAGE_INTERVAL_S (5 s)
        while scrape(serve).value("hutch_sandboxes", template="busybox", state="running") < 1:
            assert time.monotonic() < deadline, "the running gauge never counted the sandbox"
            time.sleep(0.5)
    finally:
        sbx.kill()


def _log_lines(serve: Serve) -> list[dict[str, object]]:
    lines = []
    for raw in (serve.home / "serve.log").read_text(errors="replace").splitlines():
        if raw.startswith("{"):
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError:
                continue
    return lines


def test_one_request_id_follows_a_sandbox_through_every_role(serve: Serve) -> None:
    request_id = "obs-" + secrets.token_hex(8)
    sbx = Sandbox.create("busybox", timeout=120, headers={"X-Request-Id": request_id})
    try:
        sbx.commands.run("true")
        # The proxy takes an incoming id too and answers with it.
        proxy_id = "obs-proxy-" + secrets.token_hex(8)
        answer = httpx.get(
            f"{serve.sandbox_url}/health",
            headers={"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "49983",
                     "X-Request-Id": proxy_id},
            timeout=10,
        )  # fmt: skip
        assert answer.headers["x-request-id"] == proxy_id
        # The api makes one when none is sent, and returns it.
        made = httpx.get(f"{serve.api_url}/health", timeout=10).headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", made)
    finally:
        sbx.kill()

    # An access line is written just after its answer: wait for the proxy's.
    deadline = time.monotonic() + 60
    lines = _log_lines(serve)
    while not any(line.get("request_id") == proxy_id for line in lines):
        assert time.monotonic() < deadline, "the proxy never logged the request"
        time.sleep(0.05)
        lines = _log_lines(serve)
    of_create = [line for line in lines if line.get("request_id") == request_id]
    roles = {str(line["logger"]).split(".")[1] for line in of_create}
    assert {"api", "node"} <= roles, of_create
    # Every line of the create names the sandbox: one grep by id finds them all.
    assert all(line.get("sandbox_id") == sbx.sandbox_id for line in of_create), of_create
    node_lines = [line for line in of_create if str(line["logger"]).startswith("hutch.node")]
    assert all(line.get("node_id") for line in node_lines), node_lines
    api_access = [line for line in of_create if line["logger"] == "hutch.api.access"]
    assert api_access and api_access[0].get("team_id") and api_access[0].get("template")
    proxied = [line for line in lines if line.get("request_id") == proxy_id]
    assert [line["logger"] for line in proxied] == ["hutch.proxy.access"]
    assert proxied[0]["sandbox_id"] == sbx.sandbox_id
    by_sandbox = {str(line["logger"]).split(".")[1] for line in lines
                  if line.get("sandbox_id") == sbx.sandbox_id}  # fmt: skip
    assert {"api", "node", "proxy"} <= by_sandbox
