"""The dashboard's response headers and request checks (CSP, CSRF, Origin; ADR 0026).

Two header sets. Pages of the app get a strict Content-Security-Policy: scripts, styles and
connections from this origin only (no inline script or style, so an injected tag does
nothing), no framing. What the bridges return (API bodies, files from a sandbox) is data
the page fetches, never a page: ``default-src 'none'; sandbox`` means that even a file
opened directly cannot run script in this origin, and ``nosniff`` that it cannot be
loaded as one.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from typing import Final
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hutch.shared.errors import PermissionDeniedError

APP_CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
DATA_CSP: Final = "default-src 'none'; frame-ancestors 'none'; sandbox"

_COMMON: Final = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
#: Methods that change nothing, so need no CSRF token.
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER: Final = "x-csrf-token"


#: The bridges' paths: what they answer is data (the app's own pages are everything else,
#: ``/dashboard/sandboxes/{id}`` among them).
DATA_PATHS: Final = re.compile(
    r"^/dashboard/(api/|sandboxes/[^/]+/(envd|terminal)(/|$)|volumes/[^/]+/content(/|$))"
)


class SecurityHeaders:
    """Adds the headers above to every response of ``app`` (the data set on the bridges'
    paths, the app set elsewhere) unless the response set its own CSP."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        data = DATA_PATHS.match(str(scope.get("path", ""))) is not None
        csp = (DATA_CSP if data else APP_CSP).encode()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {k.lower() for k, _ in headers}
                if b"content-security-policy" not in present:
                    headers.append((b"content-security-policy", csp))
                headers.extend(h for h in _COMMON if h[0] not in present)
                if data and b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self._app(scope, receive, send_with_headers)


def check_csrf(method: str, headers: Mapping[str, str], *, expected: str) -> None:
    """PermissionDeniedError (403) unless a ``method`` that changes things carries the
    session's token in ``X-CSRF-Token`` (compared in constant time)."""
    if method.upper() in SAFE_METHODS:
        return
    check_token(headers.get(CSRF_HEADER), expected=expected, where="the X-CSRF-Token header")


def check_token(given: str | None, *, expected: str, where: str) -> None:
    """PermissionDeniedError (403) unless ``given`` is ``expected``."""
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise PermissionDeniedError(
            f"CSRF token missing or wrong in {where}",
            public_message=f"Missing or wrong CSRF token in {where}: send the csrfToken "
            "that /dashboard/session returned",
        )


def check_origin(headers: Mapping[str, str], *, required: bool) -> None:
    """PermissionDeniedError (403) when the ``Origin`` header names another host than the
    request's ``Host`` (a page of another site); ``required``: also when it is absent (a
    WebSocket, which browsers open cross-site with the cookie attached)."""
    origin = headers.get("origin")
    if origin is None:
        if required:
            raise PermissionDeniedError("no Origin header", public_message="Missing Origin header")
        return
    host = headers.get("host", "")
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not host or parts.netloc.lower() != host.lower():
        raise PermissionDeniedError(
            f"Origin {origin!r} is not this host ({host!r})",
            public_message="Cross-origin request refused: the Origin header is not this host",
        )
