"""The node API's authentication: the cluster token as ``Authorization: Bearer <token>``.

A pure ASGI middleware in front of every route (``GET /v1/node`` included): anything but
the exact token is 401 (``UnauthenticatedError`` on the wire). The comparison is
constant-time. ``token=None`` is only accepted for an API bound to a Unix socket in a
private directory (``node/runner.py`` enforces that).
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from hutch.node.http.errors import error_response
from hutch.shared.errors import UnauthenticatedError


class BearerAuth:
    """Refuses every HTTP request without ``Authorization: Bearer <token>``."""

    def __init__(self, app: ASGIApp, *, token: str | None) -> None:
        self._app = app
        self._expected = f"Bearer {token}".encode() if token is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self._expected is not None:
            sent = b""
            for name, value in scope.get("headers", ()):
                if name == b"authorization":
                    sent = value
                    break
            if not hmac.compare_digest(sent, self._expected):
                reason = "missing" if not sent else "wrong"
                await error_response(UnauthenticatedError(f"node API: {reason} cluster token"))(
                    scope, receive, send
                )
                return
        await self._app(scope, receive, send)
