"""The node API (``create_node_app``) in uvicorn on a Unix socket, in a thread, over a
``NodeService`` of fakes (``tests/fakes/sandboxes.py``): the wire and both of its ends are
real, only runc is not. The client is the api's real ``HttpNodeClient``."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from hutch.api.nodes.http_client import HttpNodeClient
from hutch.node.http.app import create_node_app
from hutch.node.service import NodeIdentity, NodeService
from tests.fakes.sandboxes import FakeSamples, FakeSandboxes, FakeTemplates, FakeVolumeBackend

TOKEN = "cluster-token-for-tests"


@dataclass
class WiredNode:
    socket: Path
    sandboxes: FakeSandboxes
    templates: FakeTemplates
    volumes: FakeVolumeBackend
    server: uvicorn.Server

    def transport(self) -> httpx.AsyncHTTPTransport:
        return httpx.AsyncHTTPTransport(uds=str(self.socket))

    async def client(self, token: str | None = TOKEN) -> HttpNodeClient:
        return await HttpNodeClient.connect("http://node", token=token, transport=self.transport())


@pytest.fixture
def wired_node(tmp_path: Path) -> Iterator[WiredNode]:
    sandboxes = FakeSandboxes(capacity=3)
    templates = FakeTemplates()
    volumes = FakeVolumeBackend(tmp_path / "volumes")
    service = NodeService(
        identity=NodeIdentity(
            node_id="node-a",
            version="9.9",
            runtime="fake",
            max_sandboxes=3,
            pool_sizes={"base": 2, "busybox": 0},
        ),
        sandboxes=sandboxes,
        sampler=FakeSamples(),
        templates=templates,  # type: ignore[arg-type]  # duck-typed TemplateManager
        volumes={"local": volumes},  # type: ignore[dict-item]
    )
    sock = tmp_path / "node.sock"
    config = uvicorn.Config(
        create_node_app(service, token=TOKEN), uds=str(sock), lifespan="off",
        log_level="warning", access_log=False,
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the node API did not start")
        time.sleep(0.01)
    try:
        yield WiredNode(sock, sandboxes, templates, volumes, server)
    finally:
        templates.release.set()
        server.should_exit = True
        thread.join(10)


@pytest.fixture
async def node_client(wired_node: WiredNode) -> AsyncIterator[HttpNodeClient]:
    client = await wired_node.client()
    try:
        yield client
    finally:
        await client.aclose()
