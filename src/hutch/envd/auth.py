"""Access control for envd: the access token, and signed ``/files`` URLs.

When ``/init`` has set an access token, every request must carry it as ``X-Access-Token``,
except the exact routes below. Routes are matched exactly, never by prefix: a prefix rule
once let ``POST /files`` match ``POST /filesystem.Filesystem/*``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from urllib.parse import parse_qs

from hutch.envd.state import EnvdState
from hutch.shared.signatures import check_signature

#: Routes that never need the token.
_OPEN_ROUTES = frozenset({("GET", "/health")})
#: Routes that accept a valid signature instead of the token, and the operation it signs.
_SIGNED_ROUTES = {("GET", "/files"): "read", ("POST", "/files"): "write"}


def _header(scope: dict, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


class AccessControl:
    """ASGI middleware enforcing the access token (see module docstring)."""

    def __init__(self, app: Callable, state: EnvdState, *, clock: Callable[[], float] = time.time):
        self._app = app
        self._state = state
        self._clock = clock

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or self._state.access_token is None:
            return await self._app(scope, receive, send)
        route = (scope["method"], scope["path"])
        if route in _OPEN_ROUTES or scope["method"] == "OPTIONS":
            return await self._app(scope, receive, send)
        if self._state.token_matches(_header(scope, b"x-access-token")):
            return await self._app(scope, receive, send)
        reason = "missing or invalid access token (X-Access-Token)"
        operation = _SIGNED_ROUTES.get(route)
        if operation is not None:
            query = parse_qs(
                scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True
            )
            reason = (
                check_signature(
                    query, operation=operation, token=self._state.access_token, now=self._clock()
                )
                or ""
            )
            if not reason:
                return await self._app(scope, receive, send)
        body = json.dumps({"code": 401, "message": reason}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
