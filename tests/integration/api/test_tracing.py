"""Traces across the api and the node (issue 17): a create through the real api app, its
real ``HttpNodeClient`` and the real node API (``create_node_app`` in uvicorn over the
fakes of ``tests/fakes/sandboxes.py``), recorded by an in-memory span exporter.

The node wire carries the W3C ``traceparent``: the node's SERVER span is a child of the
api's CLIENT span, which is a child of the api's SERVER span; one trace id for all.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from hutch.api.app import create_app
from hutch.api.nodes.http_client import HttpNodeClient
from hutch.api.settings import ApiSettings
from tests.conftest import free_port
from tests.integration.api.conftest import _seed
from tests.integration.nodewire.conftest import TOKEN, WiredNode, wired_node  # noqa: F401
from tests.integration.store.conftest import run_async

_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    # One SDK provider per process (OpenTelemetry allows setting it once); spans of other
    # tests in this process would be recorded too, so each test clears it first.
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    return _EXPORTER


@pytest.fixture
def traced_api(tmp_path: Path, wired_node: WiredNode) -> Iterator[tuple[str, str]]:  # noqa: F811
    wired_node.sandboxes.templates.add("busyboxtemplate00001")  # the seeded row's id
    url = f"sqlite+aiosqlite:///{tmp_path / 'hutch.db'}"
    key, *_ = run_async(lambda: _seed(url))
    node = run_async(
        lambda: HttpNodeClient.connect("http://node", token=TOKEN, transport=wired_node.transport())
    )
    port = free_port()
    settings = ApiSettings(home=tmp_path, database_url=url, api_host="127.0.0.1", api_port=port,
                           reaper_interval_s=3600, usage_interval_s=3600)  # fmt: skip
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, node=node),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the api did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", key
    finally:
        server.should_exit = True
        thread.join(30)


def test_tracing_a_create_spans_the_api_and_the_node_in_one_trace(
    exporter: InMemorySpanExporter, traced_api: tuple[str, str]
) -> None:
    url, key = traced_api
    exporter.clear()
    # A caller's own trace is continued, not replaced.
    parent_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    created = httpx.post(
        f"{url}/sandboxes",
        json={"templateID": "busybox"},
        headers={"X-API-Key": key, "traceparent": f"00-{parent_trace}-00f067aa0ba902b7-01"},
        timeout=30,
    )
    assert created.status_code == 201, created.text
    sandbox_id = created.json()["sandboxID"]
    assert httpx.delete(f"{url}/sandboxes/{sandbox_id}", headers={"X-API-Key": key},
                        timeout=30).status_code == 204  # fmt: skip

    # A server span ends just after its response is sent: wait for the kill's to end.
    deadline = time.monotonic() + 60
    while not any(s.name == "api DELETE /sandboxes/{sandbox_id}"
                  for s in exporter.get_finished_spans()):  # fmt: skip
        assert time.monotonic() < deadline, [s.name for s in exporter.get_finished_spans()]
        time.sleep(0.01)
    spans = {span.name: span for span in exporter.get_finished_spans()}
    api = spans["api POST /sandboxes"]
    node = next(
        s for s in exporter.get_finished_spans()
        if s.name == "node POST /v1/sandboxes" and s.kind is trace.SpanKind.SERVER
    )  # fmt: skip
    client = next(
        s for s in exporter.get_finished_spans()
        if s.name == "node POST /v1/sandboxes" and s.kind is trace.SpanKind.CLIENT
    )  # fmt: skip
    operation = spans["sandbox.create"]
    assert api.kind is trace.SpanKind.SERVER
    spans_of_create = (api, operation, client, node)
    assert {format(s.context.trace_id, "032x") for s in spans_of_create} == {parent_trace}
    # api SERVER → sandbox.create (the service) → node CLIENT → node SERVER
    assert operation.parent is not None and operation.parent.span_id == api.context.span_id
    assert operation.attributes["hutch.template"] == "busybox"
    assert operation.attributes["hutch.outcome"] == "ok"
    assert client.parent is not None and client.parent.span_id == operation.context.span_id
    assert node.parent is not None and node.parent.span_id == client.context.span_id
    assert api.attributes["http.route"] == "/sandboxes"
    assert api.attributes["hutch.sandbox_id"] == sandbox_id
    assert node.attributes["hutch.sandbox_id"] == sandbox_id
    assert node.attributes["http.response.status_code"] == 201
    # The kill is traced across the wire too.
    kill = spans["api DELETE /sandboxes/{sandbox_id}"]
    node_kill = next(
        s for s in exporter.get_finished_spans()
        if s.name == "node DELETE /v1/sandboxes/{sandbox_id}" and s.kind is trace.SpanKind.SERVER
    )  # fmt: skip
    assert node_kill.context.trace_id == kill.context.trace_id
