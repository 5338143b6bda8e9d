"""The proxy over plain HTTP upstreams: routing, errors, headers, bodies, disconnects."""

from __future__ import annotations

import asyncio
import gzip
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler

import httpx
import pytest

from hutch.proxy.catalog import SandboxRoute
from hutch.shared.ids import SandboxID
from tests.conftest import free_port
from tests.integration.proxy.conftest import Handler, RunningProxy, Upstream

SID = SandboxID("isbx1")


def _route(proxy: RunningProxy, **ports: int) -> None:
    proxy.catalog.put(
        SandboxRoute(SID, "127.0.0.1", ports={int(k[1:]): v for k, v in ports.items()})
    )


def _headers(port: int, sandbox: str = SID) -> dict[str, str]:
    return {"E2b-Sandbox-Id": sandbox, "E2b-Sandbox-Port": str(port)}


def test_proxy_routes_by_headers_to_the_named_port(
    proxy: RunningProxy, start_upstream: Callable[[Handler], Upstream]
) -> None:
    a, b = start_upstream(), start_upstream()  # type: ignore[call-arg]
    _route(proxy, p8000=a.port, p9000=b.port)
    for port, upstream in ((8000, a), (9000, b)):
        r = httpx.get(proxy.url + "/x/y?q=1", headers=_headers(port))
        assert r.status_code == 200
        assert r.json()["port"] == upstream.port
        assert r.json()["path"] == "/x/y?q=1"


def test_proxy_routes_by_host_and_strips_the_client_id(
    proxy: RunningProxy, start_upstream: Callable[[Handler], Upstream]
) -> None:
    a = start_upstream()  # type: ignore[call-arg]
    _route(proxy, p3000=a.port)
    for host in (f"3000-{SID}.sandbox.example", f"3000-{SID}-6532622b.example:443"):
        r = httpx.get(proxy.url + "/", headers={"Host": host})
        assert r.status_code == 200, r.text
        sent = dict(r.json()["headers"])
        assert sent["host"] == f"127.0.0.1:{a.port}"
        assert sent["x-forwarded-host"] == host
        assert sent["x-forwarded-for"] == "127.0.0.1"
        assert sent["x-forwarded-proto"] == "http"


@pytest.mark.parametrize(
    "headers",
    [
        {"E2b-Sandbox-Id": SID},
        {"E2b-Sandbox-Port": "49983"},
        {"E2b-Sandbox-Id": "Bad-", "E2b-Sandbox-Port": "1"},
        {"E2b-Sandbox-Id": SID, "E2b-Sandbox-Port": "99999"},
        {},
    ],
)
def test_proxy_rejects_incomplete_routing_with_400(
    proxy: RunningProxy, headers: dict[str, str]
) -> None:
    r = httpx.get(proxy.url + "/health", headers=headers)
    assert r.status_code == 400
    assert r.json()["code"] == 400 and r.json()["message"]


def test_proxy_unknown_or_stopped_sandbox_is_502_not_found(proxy: RunningProxy) -> None:
    proxy.catalog.put(SandboxRoute(SandboxID("paused"), "127.0.0.1", running=False))
    for sandbox in ("nosuch", "paused", "nosuch-6532622b"):
        r = httpx.get(proxy.url + "/health", headers=_headers(49983, sandbox))
        assert r.status_code == 502
        assert r.json() == {
            "sandboxId": sandbox.split("-")[0],
            "message": "The sandbox was not found",
            "code": 502,
        }


def test_proxy_closed_port_is_502_port_not_open(proxy: RunningProxy) -> None:
    closed = free_port()
    _route(proxy, p5000=closed)
    r = httpx.get(proxy.url + "/", headers=_headers(5000))
    assert r.status_code == 502
    assert r.json() == {
        "sandboxId": SID,
        "port": 5000,
        "message": "The sandbox is running but port is not open",
        "code": 502,
    }


def test_proxy_drops_hop_by_hop_headers_both_ways(
    proxy: RunningProxy, start_upstream: Callable[[Handler], Upstream]
) -> None:
    def answer(req: BaseHTTPRequestHandler, up: Upstream) -> None:
        # Recorded before answering: the client may read the response before this thread
        # runs again, so a record made after the write can be missing when it asserts.
        up.events.append(repr(sorted(k.lower() for k in req.headers)))
        req.send_response(200)
        req.send_header("Connection", "keep-alive, X-Secret-Hop")
        req.send_header("X-Secret-Hop", "1")
        req.send_header("Keep-Alive", "timeout=5")
        req.send_header("X-End-To-End", "yes")
        req.send_header("Content-Length", "2")
        req.end_headers()
        req.wfile.write(b"ok")

    a = start_upstream(answer)
    _route(proxy, p80=a.port)
    r = httpx.get(
        proxy.url + "/",
        headers={
            **_headers(80),
            "Connection": "keep-alive, X-Client-Hop",
            "X-Client-Hop": "1",
            "TE": "trailers",
            "Keep-Alive": "300",
            "X-Forwarded-For": "10.0.0.9",
        },
    )
    assert r.status_code == 200 and r.text == "ok"
    assert r.headers["x-end-to-end"] == "yes"
    assert "x-secret-hop" not in r.headers and "keep-alive" not in r.headers
    seen = a.events[0]
    for name in ("x-client-hop", "'te'", "keep-alive"):
        assert name not in seen
    assert "'e2b-sandbox-id'" in seen


def test_proxy_passes_content_encoding_through_untouched(
    proxy: RunningProxy, start_upstream: Callable[[Handler], Upstream]
) -> None:
    payload = gzip.compress(b"hello " * 1000)

    def answer(req: BaseHTTPRequestHandler, up: Upstream) -> None:
        up.events.append(req.headers.get("accept-encoding") or "<none>")
        req.send_response(200)
        req.send_header("Content-Encoding", "gzip")
        req.send_header("Content-Length", str(len(payload)))
        req.end_headers()
        req.wfile.write(payload)

    a = start_upstream(answer)
    _route(proxy, p80=a.port)
    with httpx.Client() as client:
        req = client.build_request("GET", proxy.url + "/", headers=_headers(80))
        del req.headers["accept-encoding"]
        r = client.send(req, stream=True)
        raw = b"".join(r.iter_raw())
    assert raw == payload  # still compressed: the proxy did not decode
    assert a.events == ["<none>"]  # and it added no Accept-Encoding of its own


def test_proxy_streams_a_chunked_upload(
    proxy: RunningProxy, start_upstream: Callable[[Handler], Upstream]
) -> None:
    a = start_upstream()  # type: ignore[call-arg]
    _route(proxy, p80=a.port)
    parts = [bytes([65 + i]) * (1000 + i) for i in range(20)]
    r = httpx.post(proxy.url + "/up", headers=_headers(80), content=iter(parts))
    assert r.status_code == 200
    assert r.json()["body"] == b"".join(parts).decode()
    assert ["transfer-encoding", "chunked"] in r.json()["headers"]


def test_proxy_client_disconnect_closes_the_upstream_connection(
    proxy: RunningProxy, start_upstream: Callable[[Handler], Upstream]
) -> None:
    started = threading.Event()

    def endless(req: BaseHTTPRequestHandler, up: Upstream) -> None:
        req.send_response(200)
        req.send_header("Transfer-Encoding", "chunked")
        req.end_headers()
        chunk = b"x" * 16384
        try:
            while True:
                req.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                req.wfile.flush()
                started.set()
        except OSError:
            up.closed.set()

    a = start_upstream(endless)
    _route(proxy, p80=a.port)
    with socket.create_connection(("127.0.0.1", proxy.port)) as s:
        s.sendall(
            f"GET /big HTTP/1.1\r\nHost: x\r\nE2b-Sandbox-Id: {SID}\r\n"
            "E2b-Sandbox-Port: 80\r\n\r\n".encode()
        )
        assert s.recv(1024).startswith(b"HTTP/1.1 200")
        assert started.wait(10)
    # The client is gone: the upstream's writes must fail because the proxy closed its side.
    assert a.closed.wait(20)


def test_proxy_answers_502_not_found_on_every_path_and_port(proxy: RunningProxy) -> None:
    """Unknown, killed (route removed) or not yet routable (no route, or paused without
    auto-resume): 502 with infra's body, whatever the port, path or method, by header or
    Host (issue 18 gap 5: the SDK's health probe after a broken stream relies on it)."""
    proxy.catalog.put(SandboxRoute(SandboxID("ipaused"), "127.0.0.1", running=False))
    proxy.catalog.put(SandboxRoute(SandboxID("ikilled"), "127.0.0.1"))
    proxy.catalog.remove(SandboxID("ikilled"))
    for sandbox in ("inosuch", "ipaused", "ikilled"):
        for port, path, method in ((49983, "/health", "GET"), (8080, "/a/b?c=d", "POST"),
                                   (49983, "/process.Process/Start", "POST")):  # fmt: skip
            want = {"sandboxId": sandbox, "message": "The sandbox was not found", "code": 502}
            for headers in (_headers(port, sandbox), {"Host": f"{port}-{sandbox}.example"}):
                r = httpx.request(method, proxy.url + path, headers=headers, content=b"x")
                assert r.status_code == 502, (sandbox, port, path)
                assert r.headers["content-type"] == "application/json"
                assert r.json() == want


def test_proxy_refuses_envd_control_routes_with_404_for_any_sandbox(
    proxy: RunningProxy, start_upstream: Callable[[Handler], Upstream]
) -> None:
    """``/init`` and envd's other control routes are the node's, never the client's: 404
    before the lookup (the same for a live and an unknown sandbox), as infra."""
    up = start_upstream()  # type: ignore[call-arg]
    proxy.catalog.put(SandboxRoute(SID, "127.0.0.1", ports={49983: up.port}))
    for sandbox in (SID, "inosuch"):
        for path in ("/init", "//init", "/init/", "/files/%2E%2E/init"):
            r = httpx.post(proxy.url + path, headers=_headers(49983, sandbox), json={})
            assert r.status_code == 404, (sandbox, path, r.text)
            body = r.json()
            assert body["code"] == 404 and "control plane" in body["message"]
            assert "sandboxId" not in body  # the echo upstream would have answered 200
    # The same path on another port is the sandbox's own business.
    proxy.catalog.put(SandboxRoute(SID, "127.0.0.1", ports={3000: up.port}))
    assert httpx.post(proxy.url + "/init", headers=_headers(3000)).status_code == 200


def test_proxy_wake_past_its_budget_is_409_still_transitioning_then_routes(
    proxy: RunningProxy, start_upstream: Callable[[Handler], Upstream]
) -> None:
    """A request for a paused auto-resume sandbox whose resume does not end within the
    budget gets infra's 409 (retry in a moment); the resume goes on, and once it is done
    traffic flows. Requests meanwhile join the one wake (the waker runs once)."""
    up = start_upstream()  # type: ignore[call-arg]
    sid = SandboxID("iasleep")
    gate = threading.Event()
    wakes: list[str] = []

    async def waker(sandbox_id: SandboxID) -> None:
        wakes.append(sandbox_id)
        await asyncio.to_thread(gate.wait, 30)
        proxy.catalog.put(SandboxRoute(sandbox_id, "127.0.0.1", ports={49983: up.port}))

    proxy.catalog.put(SandboxRoute(sid, "127.0.0.1", running=False, auto_resume=True))
    proxy.catalog.waker = waker
    proxy.catalog.wake_budget_s = 0.2
    for _ in range(2):
        r = httpx.get(proxy.url + "/health", headers=_headers(49983, sid))
        assert r.status_code == 409, r.text
        assert r.json() == {
            "sandboxId": sid,
            "message": "The sandbox is still transitioning. Try again in a moment.",
            "code": 409,
        }
    gate.set()
    end = time.monotonic() + 30
    while (r := httpx.get(proxy.url + "/health", headers=_headers(49983, sid))).status_code != 200:
        assert time.monotonic() < end, r.text
        time.sleep(0.02)
    assert wakes == [sid]
