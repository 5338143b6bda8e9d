"""Access control for envd: the access token, and signed ``/files`` URLs.

When ``/init`` has set an access token, every request must carry it as ``X-Access-Token``,
except the exact routes below. Routes are matched exactly, never by prefix: a prefix rule
once let ``POST /files`` match ``POST /filesystem.Filesystem/*``.

The refusals follow E2B's envd (``internal/api/auth.go``) word for word, since clients
compare them: ``/files`` with a wrong token in the header is refused even when the link is
also signed (``TOKEN_MISMATCH``), without a header it needs a valid, unexpired signature
(``shared.signatures``), and any other route without the token gets ``UNAUTHORIZED``. A
``signature_expiration`` that is not an integer is a 400 on ``/files``, token or not, as
E2B's parameter binding answers it before any check.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from urllib.parse import parse_qs

from hutch.envd.state import EnvdState
from hutch.shared.signatures import (
    TOKEN_MISMATCH,
    UNAUTHORIZED,
    check_signature,
    expiration_format_error,
)

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
        if scope["type"] != "http":
            return await self._app(scope, receive, send)
        route = (scope["method"], scope["path"])
        operation = _SIGNED_ROUTES.get(route)
        query = None
        if operation is not None:
            query = parse_qs(
                scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True
            )
            bad_format = expiration_format_error(query)
            if bad_format is not None:
                return await _refuse(send, 400, bad_format)
        token = self._state.access_token
        if token is None or route in _OPEN_ROUTES or scope["method"] == "OPTIONS":
            return await self._app(scope, receive, send)
        presented = _header(scope, b"x-access-token") or None  # empty counts as absent
        if self._state.token_matches(presented):
            return await self._app(scope, receive, send)
        if query is None:
            return await _refuse(send, 401, UNAUTHORIZED)
        if presented is not None:
            return await _refuse(send, 401, TOKEN_MISMATCH)
        reason = check_signature(query, operation=operation, token=token, now=self._clock())
        if reason is not None:
            return await _refuse(send, 401, reason)
        return await self._app(scope, receive, send)


async def _refuse(send: Callable, status: int, message: str) -> None:
    body = json.dumps({"code": status, "message": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
