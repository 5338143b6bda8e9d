"""Large request bodies relayed below ASGI (``proxy/bodyrelay.py``, ADR 36 addendum 2).

Raw sockets on the client side, so the framing is what these tests control: 100-continue,
a pipelined request right behind a relayed body, a client that vanishes mid-body.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from hutch.proxy.bodyrelay import RELAY_MIN_BYTES
from hutch.proxy.catalog import SandboxRoute
from hutch.shared.ids import SandboxID
from tests.conftest import EnvdProcess, start_envd, stop_envd
from tests.integration.proxy.conftest import Handler, RunningProxy, Upstream

SID = SandboxID("isbxrelay")
BIG = 2 * RELAY_MIN_BYTES + 12345  # relayed: above the threshold, not a round number


def _route(proxy: RunningProxy, port: int, upstream: int) -> None:
    proxy.catalog.put(SandboxRoute(SID, "127.0.0.1", ports={port: upstream}))


def _head(method: str, target: str, port: int, *extra: str) -> bytes:
    lines = [
        f"{method} {target} HTTP/1.1",
        "Host: x",
        f"E2b-Sandbox-Id: {SID}",
        f"E2b-Sandbox-Port: {port}",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _read_response(f: object) -> tuple[int, dict[str, str], bytes]:
    """One response from a socket's ``makefile("rb")``: status, headers, body (by length)."""
    status_line = f.readline()  # type: ignore[attr-defined]
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    headers: dict[str, str] = {}
    while (line := f.readline()) not in (b"\r\n", b""):  # type: ignore[attr-defined]
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    body = f.read(int(headers.get("content-length", "0")))  # type: ignore[attr-defined]
    return int(status_line.split()[1]), headers, body


def _echoed(body: bytes) -> dict:
    return json.loads(body)


def test_a_large_body_is_relayed_below_asgi_and_a_small_one_is_not(
    proxy: RunningProxy, start_upstream: Callable[[Handler], Upstream]
) -> None:
    up = start_upstream()  # type: ignore[call-arg]
    _route(proxy, 80, up.port)
    data = os.urandom(BIG)
    headers = {"E2b-Sandbox-Id": SID, "E2b-Sandbox-Port": "80", "X-Hutch-Node-Token": "no"}
    big = httpx.post(proxy.url + "/up?x=1", headers=headers, content=data)
    small = httpx.post(proxy.url + "/up", headers=headers, content=b"s" * 1000)
    assert big.status_code == small.status_code == 200
    seen = _echoed(big.content)
    assert seen["body"].encode("latin-1") == data
    assert seen["path"] == "/up?x=1"
    sent = dict(seen["headers"])
    assert sent["content-length"] == str(BIG)
    assert sent["connection"] == "close"  # its own upstream connection: the relay's mark
    assert "x-hutch-node-token" not in sent
    assert sent["x-forwarded-host"] == f"127.0.0.1:{proxy.port}"
    assert sent["host"] == f"127.0.0.1:{up.port}"
    assert "x-request-id" in {k.lower() for k in big.headers}
    # Below the threshold the pooled client forwards it, on a kept-alive connection.
    assert dict(_echoed(small.content)["headers"]).get("connection") != "close"


def test_a_chunked_body_keeps_the_asgi_path_and_arrives_whole(
    proxy: RunningProxy, start_upstream: Callable[[Handler], Upstream]
) -> None:
    up = start_upstream()  # type: ignore[call-arg]
    _route(proxy, 80, up.port)
    parts = [os.urandom(64 * 1024) for _ in range(12)]  # 768 KiB, no Content-Length
    r = httpx.post(
        proxy.url + "/up",
        headers={"E2b-Sandbox-Id": SID, "E2b-Sandbox-Port": "80"},
        content=iter(parts),
    )
    assert r.status_code == 200
    seen = _echoed(r.content)
    assert seen["body"].encode("latin-1") == b"".join(parts)
    assert ["transfer-encoding", "chunked"] in seen["headers"]


def test_expect_100_continue_is_answered_before_the_body_is_sent(
    proxy: RunningProxy, start_upstream: Callable[[Handler], Upstream]
) -> None:
    up = start_upstream()  # type: ignore[call-arg]
    _route(proxy, 80, up.port)
    data = os.urandom(BIG)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=20) as s:
        s.sendall(_head("PUT", "/part", 80, f"Content-Length: {BIG}", "Expect: 100-continue"))
        f = s.makefile("rb")
        # The client sends nothing more until it is told to continue.
        assert f.readline() == b"HTTP/1.1 100 Continue\r\n"
        assert f.readline() == b"\r\n"
        s.sendall(data)
        status, _, body = _read_response(f)
    assert status == 200
    seen = _echoed(body)
    assert seen["body"].encode("latin-1") == data
    assert "expect" not in dict(seen["headers"])  # the proxy answered it; envd needs none


def test_the_connection_is_kept_alive_after_a_relayed_body_even_pipelined(
    proxy: RunningProxy, start_upstream: Callable[[Handler], Upstream]
) -> None:
    up = start_upstream()  # type: ignore[call-arg]
    _route(proxy, 80, up.port)
    first, second = os.urandom(BIG), os.urandom(BIG + 1)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=20) as s:
        f = s.makefile("rb")
        s.sendall(_head("POST", "/one", 80, f"Content-Length: {BIG}") + first)
        status, headers, body = _read_response(f)
        assert status == 200 and headers.get("connection") != "close"
        assert _echoed(body)["body"].encode("latin-1") == first
        # A second relayed body and a GET behind it in one write: the relay must stop at
        # exactly Content-Length, or the GET would be swallowed as body bytes.
        s.sendall(
            _head("POST", "/two", 80, f"Content-Length: {BIG + 1}")
            + second
            + _head("GET", "/three", 80)
        )
        status, _, body = _read_response(f)
        assert status == 200
        assert _echoed(body)["path"] == "/two"
        assert _echoed(body)["body"].encode("latin-1") == second
        status, _, body = _read_response(f)
        assert status == 200
        assert _echoed(body)["path"] == "/three" and _echoed(body)["method"] == "GET"


def test_a_relayed_body_to_a_closed_port_is_502_port_not_open(proxy: RunningProxy) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    _route(proxy, 80, closed)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=20) as s:
        # With Expect the client learns it before sending a byte of the body.
        s.sendall(_head("POST", "/x", 80, f"Content-Length: {BIG}", "Expect: 100-continue"))
        status, _, body = _read_response(s.makefile("rb"))
    assert status == 502
    assert json.loads(body)["message"] == "The sandbox is running but port is not open"


@pytest.fixture(scope="module")
def envd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvdProcess]:
    process = start_envd(tmp_path_factory.mktemp("envd-relay"))
    try:
        yield process
    finally:
        stop_envd(process)


def _pipes() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:")
    return count


def _eventually(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30  # a bound on a hang, not a measurement
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_envd_through_the_relay_writes_byte_exact_files(
    proxy: RunningProxy, envd: EnvdProcess, tmp_path: Path
) -> None:
    _route(proxy, 49983, envd.port)
    data = os.urandom(8 * 1024 * 1024 + 7)
    target = tmp_path / "relayed.bin"
    headers = {
        "E2b-Sandbox-Id": SID,
        "E2b-Sandbox-Port": "49983",
        "Content-Type": "application/octet-stream",
    }
    r = httpx.post(
        proxy.url + "/files", params={"path": str(target)}, headers=headers, content=data
    )
    assert r.status_code == 200, r.text
    assert r.json()[0]["path"] == str(target)
    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(data).digest()


def test_a_client_gone_mid_body_aborts_the_upload_in_envd(
    proxy: RunningProxy, envd: EnvdProcess, tmp_path: Path
) -> None:
    _route(proxy, 49983, envd.port)
    target = tmp_path / "half.bin"
    pipes_before = _pipes()
    declared = 64 * 1024 * 1024

    def temp_files() -> list[Path]:
        return [p for p in tmp_path.iterdir() if ".hutch-upload-" in p.name]

    s = socket.create_connection(("127.0.0.1", proxy.port), timeout=20)
    try:
        s.sendall(
            _head(
                "POST",
                f"/files?path={target}",
                49983,
                f"Content-Length: {declared}",
                "Content-Type: application/octet-stream",
            )
        )
        s.sendall(os.urandom(4 * 1024 * 1024))
        # envd is writing it: its temporary file exists (the bytes crossed the relay).
        _eventually(lambda: bool(temp_files()), "envd never started the upload")
    finally:
        s.close()
    # envd saw the abort (the proxy reset its connection): no temp file, no target file.
    _eventually(lambda: not temp_files(), f"envd kept {temp_files()}")
    assert not target.exists()
    # and the proxy closed its pipe: nothing leaks per aborted relay.
    _eventually(lambda: _pipes() <= pipes_before, "the relay's pipe leaked")
    # The proxy still serves the next upload.
    r = httpx.post(
        proxy.url + "/files",
        params={"path": str(target)},
        headers={"E2b-Sandbox-Id": SID, "E2b-Sandbox-Port": "49983"},
        content=b"z" * BIG,
    )
    assert r.status_code == 200, r.text
    assert target.stat().st_size == BIG
