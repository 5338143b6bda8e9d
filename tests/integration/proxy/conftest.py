"""A real proxy under uvicorn on a free loopback port, and plain HTTP upstreams to aim it at."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import uvicorn

from hutch.proxy.catalog import InMemorySandboxCatalog
from hutch.proxy.runner import create_config
from tests.conftest import free_port


@dataclass
class RunningProxy:
    """A proxy served in a background thread (httpx's ``serve_in_thread`` pattern)."""

    url: str
    port: int
    catalog: InMemorySandboxCatalog
    server: uvicorn.Server


@pytest.fixture
def proxy() -> Iterator[RunningProxy]:
    catalog = InMemorySandboxCatalog()
    port = free_port()
    server = uvicorn.Server(create_config(catalog, host="127.0.0.1", port=port))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("proxy did not start")
        time.sleep(0.01)
    try:
        yield RunningProxy(f"http://127.0.0.1:{port}", port, catalog, server)
    finally:
        server.should_exit = True
        thread.join(10)


@dataclass
class Upstream:
    """A plain threaded HTTP server; ``handler`` answers, ``events`` records what it saw."""

    port: int
    server: ThreadingHTTPServer
    events: list[str] = field(default_factory=list)
    closed: threading.Event = field(default_factory=threading.Event)


Handler = Callable[[BaseHTTPRequestHandler, Upstream], None]


def echo(req: BaseHTTPRequestHandler, upstream: Upstream) -> None:
    """Answer with what arrived: method, path, headers, body size, and this server's port."""
    length = int(req.headers.get("content-length") or 0)
    if req.headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while (size := int(req.rfile.readline().strip() or b"0", 16)) > 0:
            body += req.rfile.read(size)
            req.rfile.readline()
        req.rfile.readline()
    else:
        body = req.rfile.read(length)
    payload = json.dumps(
        {
            "port": upstream.port,
            "method": req.command,
            "path": req.path,
            "headers": [[k.lower(), v] for k, v in req.headers.items()],
            "body": body.decode("latin-1"),
        }
    ).encode()
    req.send_response(200)
    req.send_header("content-type", "application/json")
    req.send_header("content-length", str(len(payload)))
    req.end_headers()
    req.wfile.write(payload)


@pytest.fixture
def start_upstream() -> Iterator[Callable[[Handler], Upstream]]:
    servers: list[ThreadingHTTPServer] = []

    def start(handler: Handler = echo) -> Upstream:
        holder: list[Upstream] = []

        class _Req(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _any(self) -> None:
                handler(self, holder[0])

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _any

        server = ThreadingHTTPServer(("127.0.0.1", 0), _Req)
        server.daemon_threads = True
        holder.append(Upstream(server.server_address[1], server))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return holder[0]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
