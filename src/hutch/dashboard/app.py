"""The composition root: :class:`Dashboard`, whose :meth:`~Dashboard.routes` the api app
mounts (``create_app(mounts=...)``) at ``/dashboard``.

Routes (docs/dashboard.md is the contract the frontend builds on):

* ``GET|POST|DELETE /dashboard/session``: sign in with an API key, who am I, sign out;
* ``/dashboard/api/{path}``: the public API's ``/{path}`` (``forward.py``);
* ``/dashboard/sandboxes/{id}/envd/{path}``: the file browser's envd calls (``envd.py``);
* ``/dashboard/sandboxes/{id}/terminal``: the PTY WebSocket (``terminal.py``);
* ``/dashboard/volumes/{id}/content/{dir|file|path}``: the volume file browser's calls to
  the volume content API, with a token minted here (``volumes.py``);
* ``GET /dashboard[/{path}]``: the app (``static.py``).

Errors are the api's (``hutch.shared.errors`` raised here are rendered by the api's own
handlers as E2B's ``{"code", "message"}``), so the app reads one error shape everywhere.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from hutch.api.http.auth import context
from hutch.api.http.errors import error_response
from hutch.api.service.keys import Caller
from hutch.api.store.base import SecretStore
from hutch.dashboard import envd, forward, terminal, volumes
from hutch.dashboard.security import SecurityHeaders, check_csrf, check_origin, check_token
from hutch.dashboard.sessions import COOKIE_NAME, COOKIE_PATH, Session, SessionCodec
from hutch.dashboard.settings import DashboardSettings
from hutch.dashboard.static import StaticApp
from hutch.shared.errors import (
    HutchError,
    InvalidArgumentError,
    PermissionDeniedError,
    UnauthenticatedError,
    http_status,
)

#: The store secret sessions are sealed under (every api shares it).
SECRET_NAME: Final = "dashboard-session-key"
_MAX_KEY: Final = 512
_MAX_BODY: Final = 4096

SecretSource = Callable[[], Awaitable[str]]


class Dashboard:
    """The dashboard of one api process (see the module docstring).

    ``secret``: the shared sealing secret (the store's ``SECRET_NAME``), read once at the
    first sign-in; the settings' ``secret`` wins. ``sandbox_url``: the sandbox proxy the
    bridges use (the settings' wins); None: the bridges answer 503.
    """

    def __init__(
        self,
        settings: DashboardSettings,
        *,
        secret: SecretSource,
        sandbox_url: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._secret = secret
        self._sandbox_url = settings.sandbox_url or sandbox_url
        self._clock = clock
        self._codec: SessionCodec | None = None
        self._codec_lock = asyncio.Lock()
        self._static = StaticApp(settings.effective_static_dir())
        self._client: httpx.AsyncClient | None = None

    @property
    def sandbox_url(self) -> str | None:
        return self._sandbox_url

    def routes(self) -> list[BaseRoute]:
        """What the api app mounts: ``/dashboard`` and everything below it."""
        inner = Router(
            routes=[
                Route("/session", self._session, methods=["GET", "POST", "DELETE"]),
                Route("/api/{path:path}", _Asgi(self._api)),
                Route(
                    "/sandboxes/{sandbox_id}/envd/{path:path}",
                    self._envd,
                    methods=sorted({m for ms in envd.ALLOWED.values() for m in ms}),
                ),
                WebSocketRoute("/sandboxes/{sandbox_id}/terminal", self._terminal),
                Route("/volumes/{volume_id}/content/{op}", _Asgi(self._volume_content)),
                Route("/", self._app, methods=["GET", "HEAD"]),
                Route("/{path:path}", self._app, methods=["GET", "HEAD"]),
            ],
            redirect_slashes=False,
        )
        return [
            Route("/dashboard", _Asgi(SecurityHeaders(self._root))),
            Mount("/dashboard", app=SecurityHeaders(inner)),
        ]

    async def aclose(self) -> None:
        """Close the bridges' connection pool."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # --- sessions ---------------------------------------------------------------------

    async def codec(self) -> SessionCodec:
        """The session codec, made at the first call (the store's secret read once)."""
        if self._codec is None:
            async with self._codec_lock:
                if self._codec is None:
                    secret = (
                        self._settings.secret.get_secret_value()
                        if self._settings.secret is not None
                        else await self._secret()
                    )
                    self._codec = SessionCodec(
                        hashlib.sha256(secret.encode()).digest(),
                        ttl_s=self._settings.session_ttl_s,
                        clock=self._clock,
                    )
        return self._codec

    async def _session(self, request: Request) -> Response:
        if request.method == "POST":
            return await self._sign_in(request)
        if request.method == "DELETE":
            response = Response(status_code=204)
            _clear_cookie(response, request)
            return response
        session = await self._current(request)
        if session is None:
            return _signed_out(request, "Not signed in to the dashboard")
        try:
            caller = await _caller(request, session.api_key)
        except UnauthenticatedError as exc:
            return _signed_out(request, exc.public_message)
        return JSONResponse(_session_body(caller, session), headers={"cache-control": "no-store"})

    async def _sign_in(self, request: Request) -> Response:
        check_origin(request.headers, required=False)
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            # Also what keeps a cross-site form from signing a browser in (no CORS preflight).
            return error_response(415, "Sign in with Content-Type: application/json")
        raw = await request.body()
        if len(raw) > _MAX_BODY:
            raise InvalidArgumentError("sign-in body too large", public_message="Body too large")
        try:
            body: Any = json.loads(raw)
        except ValueError as exc:
            raise InvalidArgumentError(
                "sign-in body is not JSON",
                public_message='The body must be JSON: {"apiKey": "..."}',
            ) from exc
        api_key = body.get("apiKey") if isinstance(body, dict) else None
        if not isinstance(api_key, str) or not api_key.strip() or len(api_key) > _MAX_KEY:
            raise InvalidArgumentError(
                "sign-in without apiKey",
                public_message="apiKey: a non-empty string of at most 512 characters is required",
            )
        caller = await _caller(request, api_key.strip())  # 401 "Invalid API key"
        codec = await self.codec()
        session = codec.new(api_key.strip())
        response = JSONResponse(
            _session_body(caller, session), headers={"cache-control": "no-store"}
        )
        response.set_cookie(
            COOKIE_NAME,
            codec.seal(session),
            max_age=int(codec.ttl_s),
            path=COOKIE_PATH,
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        return response

    async def _current(self, request: Request | WebSocket) -> Session | None:
        value = request.cookies.get(COOKIE_NAME)
        if value is None:
            return None
        return (await self.codec()).open(value)

    async def _require(self, request: Request) -> Session:
        session = await self._current(request)
        if session is None:
            raise UnauthenticatedError(
                "no dashboard session",
                public_message="Not signed in to the dashboard (or the session expired)",
            )
        return session

    # --- the bridges ------------------------------------------------------------------

    async def _api(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        session = await self._current(request)
        if session is None:
            await _signed_out(request, "Not signed in to the dashboard (or the session expired)")(
                scope, receive, send
            )
            return
        try:
            check_origin(request.headers, required=False)
            check_csrf(request.method, request.headers, expected=session.csrf_token)
        except Exception as exc:
            await _error(request, exc)(scope, receive, send)
            return

        async def on_unauthorized() -> list[tuple[bytes, bytes]]:
            try:
                await _caller(request, session.api_key)
            except UnauthenticatedError:
                return _clear_cookie_headers(request)
            return []  # the key works: this 401 is the route's own (e.g. /nodes, no admin)

        path = "/" + str(request.path_params.get("path", ""))
        await forward.forward(
            scope["app"], scope, receive, send,
            path=path, api_key=session.api_key, on_unauthorized=on_unauthorized,
        )  # fmt: skip

    async def _envd(self, request: Request) -> Response:
        session = await self._require(request)
        check_origin(request.headers, required=False)
        check_csrf(request.method, request.headers, expected=session.csrf_token)
        path = str(request.path_params["path"])
        envd.check_allowed(path, request.method)
        try:
            sandbox_id, token = await envd.resolve_sandbox(request, api_key=session.api_key)
        except UnauthenticatedError as exc:
            return _signed_out(request, exc.public_message)
        if self._sandbox_url is None:
            raise envd.bridge_unconfigured()
        return await envd.relay(
            self._http(), request, sandbox_url=self._sandbox_url,
            sandbox_id=sandbox_id, access_token=token, path=path,
        )  # fmt: skip

    async def _volume_content(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            session = await self._require(request)
            check_origin(request.headers, required=False)
            check_csrf(request.method, request.headers, expected=session.csrf_token)
            op = str(request.path_params["op"])
            volumes.check_allowed(op, request.method)
            volume, token = await volumes.resolve_volume(request, api_key=session.api_key)
        except Exception as exc:
            await _error(request, exc)(scope, receive, send)
            return
        await volumes.forward(
            scope["app"], request, send, receive, volume_id=volume.id, op=op, token=token
        )

    async def _terminal(self, websocket: WebSocket) -> None:
        try:
            check_origin(websocket.headers, required=True)
        except PermissionDeniedError:
            # Another site's page: refused before the upgrade (HTTP 403), nothing said.
            await websocket.close(code=1008)
            return
        # Same-origin from here: every other refusal is said on the socket, where the page
        # can read it (a refused upgrade reaches browser script as a bare "error").
        await websocket.accept()
        try:
            session = await self._current(websocket)
            if session is None:
                raise UnauthenticatedError(
                    "no dashboard session", public_message="Not signed in to the dashboard"
                )
            check_token(
                websocket.query_params.get("csrf"), expected=session.csrf_token,
                where="the csrf query parameter",
            )  # fmt: skip
            cols, rows = (
                _size(websocket.query_params.get("cols"), 80),
                _size(websocket.query_params.get("rows"), 24),
            )
            sandbox_id, token = await envd.resolve_sandbox(websocket, api_key=session.api_key)
            if self._sandbox_url is None:
                raise envd.bridge_unconfigured()
            sandbox_url = self._sandbox_url
        except HutchError as exc:
            await terminal.refuse(websocket, http_status(exc), exc.public_message)
            return
        await terminal.bridge(
            websocket, sandbox_url=sandbox_url, sandbox_id=sandbox_id, access_token=token,
            cols=cols, rows=rows,
        )  # fmt: skip

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0))
        return self._client

    # --- the app ----------------------------------------------------------------------

    async def _app(self, request: Request) -> Response:
        return await self._static.respond(request, str(request.path_params.get("path", "")))

    async def _root(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        if request.method not in ("GET", "HEAD"):
            response: Response = error_response(405, "Method Not Allowed")
        else:
            response = await self._static.respond(request, "")
        await response(scope, receive, send)


class _Asgi:
    """A plain ASGI callable as a Starlette route endpoint (any method)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)


async def _caller(request: Request | WebSocket, api_key: str) -> Caller:
    return await context(request).keys.authenticate_caller(api_key=api_key)  # type: ignore[arg-type]


def _session_body(caller: Caller, session: Session) -> dict[str, Any]:
    return {
        "team": {"teamID": caller.team.id, "name": caller.team.name},
        "admin": caller.admin,
        "csrfToken": session.csrf_token,
        "keyMask": caller.key.mask,
        "expiresAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(session.expires_at)),
    }


def _secure(request: Request | WebSocket) -> bool:
    return request.url.scheme in ("https", "wss")


def _clear_cookie(response: Response, request: Request | WebSocket) -> None:
    response.delete_cookie(
        COOKIE_NAME, path=COOKIE_PATH, secure=_secure(request), httponly=True, samesite="strict"
    )


def _clear_cookie_headers(request: Request | WebSocket) -> list[tuple[bytes, bytes]]:
    response = Response()
    _clear_cookie(response, request)
    return [(k, v) for k, v in response.raw_headers if k == b"set-cookie"]


def _signed_out(request: Request | WebSocket, message: str) -> Response:
    """401, and the cookie cleared when one was sent."""
    response = error_response(401, message)
    if COOKIE_NAME in request.cookies:
        _clear_cookie(response, request)
    return response


def _error(request: Request | WebSocket, exc: BaseException) -> Response:
    """The api's answer to ``exc`` (re-raised when it is not an error the api maps)."""
    if not isinstance(exc, HutchError):
        raise exc
    status = http_status(exc)
    if status == 401:
        return _signed_out(request, exc.public_message)
    return error_response(status, exc.public_message, retryable=exc.retryable)


def _size(raw: str | None, default: int) -> int:
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise InvalidArgumentError(
            f"bad terminal size {raw!r}", public_message="cols and rows: integers 1-1000"
        )
    return int(raw)


def store_secret(store: SecretStore) -> SecretSource:
    """The sealing secret kept in the store (made by the first api that asks), so that
    every api of a cluster opens every other's sessions."""
    import secrets

    async def read() -> str:
        return await store.get_or_create(SECRET_NAME, lambda: secrets.token_hex(32))

    return read


def local_url(host: str, port: int) -> str:
    """The URL of a server listening on ``host:port`` as this host reaches it."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
