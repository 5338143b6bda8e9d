"""WebSocket upgrades relayed byte for byte to a real upstream that does the handshake."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler

from hutch.proxy.catalog import SandboxRoute
from hutch.shared.ids import SandboxID
from tests.conftest import free_port
from tests.integration.proxy.conftest import Handler, RunningProxy, Upstream

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_echo(req: BaseHTTPRequestHandler, up: Upstream) -> None:
    """RFC 6455 handshake, then echo each masked client frame back as an unmasked one."""
    key = req.headers["Sec-WebSocket-Key"]
    up.events.append(req.headers["Host"])
    accept = base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()
    req.send_response(101)
    req.send_header("Upgrade", "websocket")
    req.send_header("Connection", "Upgrade")
    req.send_header("Sec-WebSocket-Accept", accept)
    req.end_headers()
    req.wfile.flush()
    while True:
        head = req.rfile.read(2)
        if len(head) < 2:
            return
        opcode, length = head[0] & 0x0F, head[1] & 0x7F
        if length == 126:
            length = struct.unpack(">H", req.rfile.read(2))[0]
        mask = req.rfile.read(4)
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(req.rfile.read(length)))
        if opcode == 8:
            return
        req.wfile.write(_frame(payload, masked=False))
        req.wfile.flush()


def _frame(payload: bytes, *, masked: bool) -> bytes:
    n = len(payload)
    size = (
        bytes([n | (0x80 if masked else 0)])
        if n < 126
        else bytes([126 | (0x80 if masked else 0)]) + struct.pack(">H", n)
    )
    if not masked:
        return b"\x81" + size + payload
    mask = os.urandom(4)
    return b"\x81" + size + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _handshake(port: int, extra: str) -> tuple[socket.socket, bytes]:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
            f"Sec-WebSocket-Version: 13\r\n{extra}\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            break
        head += chunk
    return s, head


def _recv_exact(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        assert chunk
        data += chunk
    return data


def test_websocket_echo_through_the_proxy(
    proxy: RunningProxy, start_upstream: Callable[[Handler], Upstream]
) -> None:
    up = start_upstream(ws_echo)
    proxy.catalog.put(SandboxRoute(SandboxID("iws"), "127.0.0.1", ports={8080: up.port}))
    s, head = _handshake(proxy.port, "E2b-Sandbox-Id: iws\r\nE2b-Sandbox-Port: 8080\r\n")
    with s:
        assert head.startswith(b"HTTP/1.1 101"), head
        for message in (b"hello", b"x" * 300):
            s.sendall(_frame(message, masked=True))
            first = _recv_exact(s, 2)
            length = first[1] if first[1] < 126 else struct.unpack(">H", _recv_exact(s, 2))[0]
            assert _recv_exact(s, length) == message
    assert up.events == [f"127.0.0.1:{up.port}"]


def test_websocket_errors_are_json(proxy: RunningProxy) -> None:
    proxy.catalog.put(SandboxRoute(SandboxID("iws"), "127.0.0.1", ports={8080: free_port()}))
    proxy.catalog.put(SandboxRoute(SandboxID("ipaused"), "127.0.0.1", running=False))
    cases = [
        ("E2b-Sandbox-Id: nosuch\r\nE2b-Sandbox-Port: 8080\r\n", b"502", b"was not found"),
        ("E2b-Sandbox-Id: iws\r\nE2b-Sandbox-Port: 8080\r\n", b"502", b"port is not open"),
        ("E2b-Sandbox-Id: iws\r\n", b"400", b"E2b-Sandbox-Port"),
        ("E2b-Sandbox-Id: ipaused\r\nE2b-Sandbox-Port: 8080\r\n", b"502", b"was not found"),
    ]
    for headers, status, text in cases:
        s, head = _handshake(proxy.port, headers)
        with s:
            rest = head
            while chunk := s.recv(4096):
                rest += chunk
        assert rest.startswith(b"HTTP/1.1 " + status) and text in rest, rest
