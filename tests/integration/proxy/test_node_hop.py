"""An edge proxy forwarding through a node's proxy (ADR 0019): two real proxies under
uvicorn, chained, in front of a plain upstream standing in for a sandbox's server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import uvicorn

from hutch.proxy.catalog import InMemorySandboxCatalog, NodeHop, SandboxRoute
from hutch.proxy.runner import create_config
from hutch.shared.ids import SandboxID
from tests.conftest import free_port
from tests.integration.proxy.conftest import Handler, Upstream

SID = SandboxID("isbx1")
TOKEN = "cluster-token"


@contextmanager
def _serving(catalog: InMemorySandboxCatalog, *, require_token: str | None) -> Iterator[int]:
    port = free_port()
    server = uvicorn.Server(
        create_config(catalog, host="127.0.0.1", port=port, require_token=require_token)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "proxy did not start"
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


def test_node_hop_edge_to_node_proxy_to_sandbox(
    start_upstream: Callable[[Handler], Upstream],
) -> None:
    sandbox = start_upstream()  # type: ignore[call-arg]
    # The node proxy knows the sandbox's "private address" (here: loopback, port remapped).
    local = InMemorySandboxCatalog(
        {SID: SandboxRoute(SID, "127.0.0.1", ports={8080: sandbox.port})}
    )
    with _serving(local, require_token=TOKEN) as node_port:
        hop = NodeHop(host="127.0.0.1", port=node_port, token=TOKEN)
        edge_catalog = InMemorySandboxCatalog({SID: SandboxRoute(SID, "10.99.0.2", via=hop)})
        with _serving(edge_catalog, require_token=None) as edge_port:
            # By Host, with a token of the client's own that must not get anywhere.
            r = httpx.get(f"http://127.0.0.1:{edge_port}/p?q=1", timeout=10,
                          headers={"Host": f"8080-{SID}.example.dev",
                                   "X-Hutch-Node-Token": "forged"})  # fmt: skip
            assert r.status_code == 200, r.text
            seen = dict(r.json()["headers"])
            assert r.json()["path"] == "/p?q=1"
            assert seen["e2b-sandbox-id"] == SID and seen["e2b-sandbox-port"] == "8080"
            assert "x-hutch-node-token" not in seen
            assert seen["x-forwarded-host"] == f"8080-{SID}.example.dev"
            # The client's own sandbox headers are replaced by the route's.
            r = httpx.get(f"http://127.0.0.1:{edge_port}/", timeout=10,
                          headers={"E2b-Sandbox-Id": SID, "E2b-Sandbox-Port": "8080"})  # fmt: skip
            assert r.status_code == 200 and r.json()["port"] == sandbox.port
        ask = {"E2b-Sandbox-Id": SID, "E2b-Sandbox-Port": "8080"}
        for headers in (ask, {**ask, "X-Hutch-Node-Token": "wrong"}):
            refused = httpx.get(f"http://127.0.0.1:{node_port}/", headers=headers, timeout=10)
            assert refused.status_code == 401
            assert refused.json() == {"message": "missing or invalid cluster token", "code": 401}
        # A sandbox the node does not run is "not found" there, whatever the edge believed.
        gone = httpx.get(f"http://127.0.0.1:{node_port}/", timeout=10,
                         headers={"E2b-Sandbox-Id": "other", "E2b-Sandbox-Port": "8080",
                                  "X-Hutch-Node-Token": TOKEN})  # fmt: skip
        assert gone.status_code == 502 and "was not found" in gone.json()["message"]


def test_node_hop_websocket_upgrade_needs_the_token() -> None:
    local = InMemorySandboxCatalog({SID: SandboxRoute(SID, "127.0.0.1")})
    with _serving(local, require_token=TOKEN) as node_port:
        import socket

        with socket.create_connection(("127.0.0.1", node_port), timeout=10) as s:
            s.sendall(
                b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                b"E2b-Sandbox-Id: " + SID.encode() + b"\r\nE2b-Sandbox-Port: 49983\r\n\r\n"
            )
            answer = s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 401"), answer
