"""The HTTP side: ``/mcp`` (streamable HTTP, bearer token) and ``GET /health``, on uvicorn."""

from __future__ import annotations

import hmac
import json
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

from hutch.mcpgateway.gateway import Gateway

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def _json(send: Send, status: int, body: object, headers: list | None = None) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


def _bearer(scope: Scope) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


def build_app(manager: StreamableHTTPSessionManager, *, token: str | None) -> ASGIApp:
    """``/mcp`` to ``manager`` for callers with ``Authorization: Bearer <token>`` (every
    caller when ``token`` is None), ``GET /health`` for anyone, 404 otherwise."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"].rstrip("/") or "/"
        if path == "/health":
            await _json(send, 200, {"status": "ok"})
        elif path == "/mcp":
            given = _bearer(scope)
            if token is not None and (
                given is None or not hmac.compare_digest(given.encode(), token.encode())
            ):
                await _json(
                    send,
                    401,
                    {"error": "unauthorized: send Authorization: Bearer <the MCP token>"},
                    [(b"www-authenticate", b'Bearer realm="mcp-gateway"')],
                )
                return
            await manager.handle_request(scope, receive, send)
        else:
            await _json(send, 404, {"error": f"not found: {scope['path']}"})

    return app


def listen(host: str, port: int) -> socket.socket:
    """The bound, listening socket (so that a taken port fails the start, not later)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(False)
    return sock


async def serve(
    gateway: Gateway,
    sock: socket.socket,
    *,
    token: str | None,
    on_ready: Callable[[], None],
) -> None:
    """Serve ``gateway`` on ``sock`` until cancelled; ``on_ready`` once uvicorn listens."""
    import asyncio

    manager = StreamableHTTPSessionManager(app=gateway.server, json_response=False)
    config = uvicorn.Config(
        build_app(manager, token=token),
        access_log=False,
        lifespan="off",
        log_level="warning",
        timeout_keep_alive=75,
    )
    server = uvicorn.Server(config)
    async with manager.run():
        task = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if server.started:
            on_ready()
        await task
