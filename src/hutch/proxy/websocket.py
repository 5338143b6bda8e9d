"""WebSocket pass-through as a raw byte relay, below ASGI.

uvicorn hands a connection whose request asks ``Upgrade: websocket`` to its ``ws`` protocol
class, replaying the request head as bytes (``h11_impl.handle_websocket_upgrade``). Instead
of a WebSocket implementation (``websockets``/``wsproto``, which would decode and re-encode
every frame and are not dependencies), :func:`websocket_relay` returns a protocol class that
routes the head exactly like HTTP requests, opens a TCP connection to the sandbox, forwards
the head (``Host`` rewritten, ``X-Forwarded-*`` added, ``Upgrade``/``Connection`` kept
because they are the point), and then copies bytes both ways: the sandbox's server does the
handshake and framing, so any subprotocol or extension works. Back-pressure: each side's
``pause_writing`` pauses reading on the other, so a slow reader bounds the memory.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, Final
from urllib.parse import unquote, urlsplit

from hutch.proxy import errors, metrics
from hutch.proxy.catalog import NODE_TOKEN_HEADER, SandboxCatalog
from hutch.proxy.routing import SandboxTarget, is_internal, route
from hutch.proxy.server import token_matches
from hutch.shared.errors import UnavailableError

#: A request head larger than this is refused (h11 already limits it; this is our buffer).
_MAX_HEAD: Final = 64 * 1024
_DROP: Final = frozenset(
    {b"host", b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto", NODE_TOKEN_HEADER}
)
_SANDBOX_HEADERS: Final = frozenset({b"e2b-sandbox-id", b"e2b-sandbox-port"})


def _parse_head(head: bytes) -> tuple[str, bytes, list[tuple[bytes, bytes]]]:
    """``(method, target, headers)`` of a request head as uvicorn replays it."""
    lines = head.split(b"\r\n")
    method, target, _version = lines[0].split(b" ", 2)
    headers = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(b":")
            headers.append((name.strip().lower(), value.strip()))
    return method.decode("ascii"), target, headers


def _http_error(answer: tuple[int, bytes]) -> bytes:
    status, body = answer
    reasons = {
        400: b"Bad Request",
        401: b"Unauthorized",
        404: b"Not Found",
        409: b"Conflict",
        502: b"Bad Gateway",
        503: b"Service Unavailable",
    }
    reason = reasons.get(status, b"Error")
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n%s" % (status, reason, len(body), body)
    )


class _Side(asyncio.Protocol):
    """One end of the relay: what it reads goes to ``peer``; its back-pressure pauses it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None

    def forward(self, data: bytes) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


class _Upstream(_Side):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.forward(data)


class WebSocketRelay(_Side):
    """The client side; uvicorn instantiates it per upgraded connection."""

    catalog: ClassVar[SandboxCatalog]
    #: A node's proxy: upgrades without this node token are refused (ADR 0019).
    require_token: ClassVar[str | None] = None

    def __init__(self, config: Any = None, server_state: Any = None, app_state: Any = None) -> None:
        super().__init__()
        self._server_state = server_state
        self._buffer = b""
        self._connecting = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self._server_state is not None:
            self._server_state.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._server_state is not None:
            self._server_state.connections.discard(self)
        if self.peer is not None:
            metrics.WEBSOCKETS_OPEN.dec()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: close both ends."""
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.peer is not None:
            self.forward(data)
            return
        self._buffer += data
        if self._connecting:
            return
        if b"\r\n\r\n" not in self._buffer:
            if len(self._buffer) > _MAX_HEAD:
                self._fail(errors.bad_request("request head too large"))
            return
        self._connecting = True
        asyncio.get_running_loop().create_task(self._connect())

    def _fail(self, answer: tuple[int, bytes]) -> None:
        assert self.transport is not None
        metrics.WEBSOCKETS.labels("refused").inc()
        self.transport.write(_http_error(answer))
        self.transport.close()

    async def _connect(self) -> None:
        assert self.transport is not None
        head, _, rest = self._buffer.partition(b"\r\n\r\n")
        method, target, headers = _parse_head(head)
        if self.require_token is not None and not token_matches(headers, self.require_token):
            return self._fail(errors.node_token_refused())
        parts = urlsplit(target)
        try:
            where = route(
                method=method,
                path=parts.path.decode("latin-1"),
                query_string=parts.query,
                headers=headers,
            )
        except errors.RoutingError as exc:
            return self._fail(errors.bad_request(exc.public_message))
        if not isinstance(where, SandboxTarget):
            return self._fail(errors.bad_request("a WebSocket must name its sandbox"))
        decoded_path = unquote(parts.path.decode("latin-1"))
        if is_internal(where, decoded_path):
            return self._fail(errors.internal_route(decoded_path))
        try:
            sandbox = await self.catalog.lookup(where.sandbox_id)
            if sandbox is not None and not sandbox.running and sandbox.auto_resume:
                try:
                    sandbox = await self.catalog.wake(where.sandbox_id)  # ADR 0004
                except errors.SandboxTransitioningError:
                    metrics.AUTO_RESUMES.labels("timeout").inc()
                    return self._fail(errors.still_transitioning(where.sandbox_id))
                metrics.AUTO_RESUMES.labels("resumed" if sandbox is not None else "failed").inc()
        except UnavailableError as exc:
            return self._fail(errors.routes_unavailable(exc.public_message))
        if sandbox is None or not sandbox.running:
            return self._fail(errors.sandbox_not_found(where.sandbox_id))
        host, port = sandbox.address(where.port)
        upstream = _Upstream()
        try:
            await asyncio.get_running_loop().create_connection(lambda: upstream, host, port)
        except OSError:
            return self._fail(errors.port_not_open(where.sandbox_id, where.port))
        if self.transport.is_closing():
            assert upstream.transport is not None
            upstream.transport.close()
            return
        upstream.peer, self.peer = self, upstream
        metrics.WEBSOCKETS.labels("relayed").inc()
        metrics.WEBSOCKETS_OPEN.inc()
        peername = self.transport.get_extra_info("peername")
        original_host = next((v for k, v in headers if k == b"host"), b"")
        proto = b"http"
        if self.require_token is not None:  # an edge, past the token check: its view holds
            original_host = next((v for k, v in headers if k == b"x-forwarded-host"), original_host)
            proto = next((v for k, v in headers if k == b"x-forwarded-proto"), proto)
        prior = [v for k, v in headers if k == b"x-forwarded-for"]
        client_ip = (peername[0] if peername else "").encode()
        lines = [
            b"%s %s HTTP/1.1" % (method.encode(), target),
            b"host: %s:%d" % (host.encode(), port),
        ]
        hop = sandbox.hop_headers(where.port)
        drop = _DROP | _SANDBOX_HEADERS if hop else _DROP
        lines += [b"%s: %s" % (k, v) for k, v in headers if k not in drop]
        lines += [b"%s: %s" % (k, v) for k, v in hop]
        lines += [
            b"x-forwarded-for: " + b", ".join([*prior, client_ip]),
            b"x-forwarded-host: " + original_host,
            b"x-forwarded-proto: " + proto,
        ]
        assert upstream.transport is not None
        upstream.transport.write(b"\r\n".join(lines) + b"\r\n\r\n" + rest)
        self._buffer = b""


def websocket_relay(
    catalog: SandboxCatalog, *, require_token: str | None = None
) -> type[WebSocketRelay]:
    """A uvicorn ``ws`` protocol class that relays upgrades to the sandboxes in ``catalog``."""
    return type(
        "BoundWebSocketRelay",
        (WebSocketRelay,),
        {"catalog": catalog, "require_token": require_token},
    )
