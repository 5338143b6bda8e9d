"""``/dashboard/api/{path}``: the public API's route ``/{path}``, called in-process.

The request goes into the api's own ASGI app (the one this dashboard is mounted in) with
the session's key as ``X-API-Key`` and the browser's credentials taken out: the same
middleware, handlers, checks, status codes and bodies as the SDK gets, streamed both ways
(uploads, NDJSON progress, file downloads), with no network hop, in ``hutch serve`` and on
any ``hutch api`` of a cluster alike.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final
from urllib.parse import quote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: What the browser sends that the API must not see: the dashboard's own credentials (the
#: cookie, the CSRF token), any key it might carry, and the host key (a browser is never
#: the host's root).
DROPPED_HEADERS: Final = frozenset(
    {b"cookie", b"x-api-key", b"authorization", b"x-csrf-token", b"x-hutch-host-key"}
)


def call_scope(
    scope: Scope, *, path: str, raw_path: bytes, credential: tuple[bytes, bytes]
) -> Scope:
    """The scope of an in-process call to the api's route ``path`` made for the browser's
    ``scope``: its method, query string, body and other headers kept, its credentials
    (:data:`DROPPED_HEADERS`) replaced by ``credential`` (one header)."""
    headers = [(k, v) for k, v in scope.get("headers", ()) if k.lower() not in DROPPED_HEADERS]
    headers.append(credential)
    inner: Scope = {
        "type": "http",
        "asgi": scope.get("asgi", {"version": "3.0"}),
        "http_version": scope.get("http_version", "1.1"),
        "method": scope["method"],
        "scheme": scope.get("scheme", "http"),
        "path": path,
        "raw_path": raw_path,
        "root_path": "",
        "query_string": scope.get("query_string", b""),
        "headers": headers,
        "client": scope.get("client"),
        "server": scope.get("server"),
        "extensions": scope.get("extensions", {}),
    }
    if "state" in scope:
        inner["state"] = dict(scope["state"])
    return inner


def inner_scope(scope: Scope, *, path: str, api_key: str) -> Scope:
    """The scope of the API call ``path`` (decoded, ``/``-rooted) that ``scope`` asks for."""
    raw = scope.get("raw_path")
    marker = b"/dashboard/api"
    if isinstance(raw, bytes) and marker in raw:
        raw_path = raw[raw.index(marker) + len(marker) :] or b"/"
    else:
        raw_path = quote(path).encode()
    return call_scope(
        scope, path=path, raw_path=raw_path, credential=(b"x-api-key", api_key.encode())
    )


async def forward(
    api: ASGIApp,
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    path: str,
    api_key: str,
    on_unauthorized: Callable[[], Awaitable[list[tuple[bytes, bytes]]]],
) -> None:
    """Run the API call in ``api``; on a 401, ``on_unauthorized()`` gives headers to add
    (the cookie cleared when the key itself no longer works)."""

    async def relay(message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] == 401:
            extra = await on_unauthorized()
            if extra:
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
        await send(message)

    await api(inner_scope(scope, path=path, api_key=api_key), receive, relay)
