"""``/dashboard/sandboxes/{id}/envd/{path}``: the file browser's calls to a sandbox's envd.

The sandbox is first looked up with the session's key exactly as ``GET /sandboxes/{id}``
does (the key check, then the sandbox service's ``get_sandbox``): another team's sandbox,
or one that does not exist, gets the API's own 404, and the lookup gives the envd access
token, which is added here and never reaches the browser. The call then goes where the
SDK's would: the sandbox proxy, routed by ``E2b-Sandbox-Id``/``-Port`` (so a paused
auto-resume sandbox wakes, and in a cluster the edge finds the sandbox's node), streamed
both ways.

Only the file browser's calls pass (:data:`ALLOWED`); a download is always an attachment of
type ``application/octet-stream``, so a sandbox's file can never render or run as a page of
this origin.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Final
from urllib.parse import quote

import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.websockets import WebSocket

from hutch.api.http.auth import context
from hutch.api.http.query import sandbox_id_param
from hutch.shared.errors import NotFoundError, UnavailableError
from hutch.shared.ids import SandboxID

#: envd's port inside every sandbox (fixed by the SDKs).
ENVD_PORT: Final = 49983
#: path → methods the bridge passes to envd.
ALLOWED: Final[dict[str, frozenset[str]]] = {
    "files": frozenset({"GET", "HEAD", "POST"}),
    **{
        f"filesystem.Filesystem/{name}": frozenset({"POST"})
        for name in ("ListDir", "Stat", "MakeDir", "Remove", "Move")
    },
}
#: Request headers passed on (the rest is the browser's, or hop-by-hop).
_REQUEST_KEEP: Final = frozenset(
    {
        "content-type",
        "content-length",
        "content-encoding",
        "accept",
        "accept-encoding",
        "connect-protocol-version",
        "connect-timeout-ms",
    }
)
#: Response headers never passed back.
_RESPONSE_DROP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "proxy-authenticate",
        "set-cookie",
        "server",
        "date",
        "content-disposition",
    }
)


async def resolve_sandbox(
    request: Request | WebSocket, *, api_key: str
) -> tuple[SandboxID, str | None]:
    """The caller's sandbox named in the path and its envd access token (None: not
    secured), checked as ``GET /sandboxes/{id}`` checks it (the same key check and the same
    service call): :class:`UnauthenticatedError` for a key that no longer works,
    :class:`NotFoundError` for another team's, a killed or an unknown sandbox."""
    ctx = context(request)  # type: ignore[arg-type]
    caller = await ctx.keys.authenticate_caller(api_key=api_key)
    sandbox = await ctx.sandboxes.get_sandbox(
        team_id=caller.team.id,
        sandbox_id=sandbox_id_param(request),  # type: ignore[arg-type]
    )
    return sandbox.id, sandbox.envd_access_token


def envd_headers(sandbox_id: str, access_token: str | None) -> dict[str, str]:
    """What routes a call through the proxy to the sandbox's envd, and lets envd accept it."""
    headers = {"E2b-Sandbox-Id": sandbox_id, "E2b-Sandbox-Port": str(ENVD_PORT)}
    if access_token:
        headers["X-Access-Token"] = access_token
    return headers


def check_allowed(path: str, method: str) -> None:
    """NotFoundError (404) unless the bridge passes ``method`` on ``path``."""
    if method.upper() not in ALLOWED.get(path, frozenset()):
        raise NotFoundError(
            f"envd bridge refuses {method} /{path}",
            public_message=f"The envd bridge does not offer {method} /{path} (it passes "
            "GET/POST /files and filesystem.Filesystem/ListDir, Stat, MakeDir, Remove, Move)",
        )


async def relay(
    client: httpx.AsyncClient,
    request: Request,
    *,
    sandbox_url: str,
    sandbox_id: str,
    access_token: str | None,
    path: str,
) -> Response:
    """Send ``request`` to ``/{path}`` of the sandbox's envd through the proxy; stream the
    answer back."""
    headers = {
        k: v
        for k, v in request.headers.items()
        if k in _REQUEST_KEEP or k.startswith("x-metadata-")  # an upload's file metadata
    }
    authorization = request.headers.get("authorization", "")
    if authorization.lower().startswith("basic "):
        headers["authorization"] = authorization  # envd's per-call user, not a credential
    headers.update(envd_headers(sandbox_id, access_token))
    url = f"{sandbox_url.rstrip('/')}/{path}"
    query = request.scope.get("query_string", b"")
    if query:
        url += "?" + query.decode("latin-1")
    has_body = request.method in ("POST", "PUT", "PATCH")
    outgoing = client.build_request(
        request.method, url, headers=headers, content=request.stream() if has_body else None
    )
    try:
        upstream = await client.send(outgoing, stream=True)
    except httpx.HTTPError as exc:
        raise UnavailableError(
            f"sandbox proxy {sandbox_url} unreachable: {exc!r}",
            public_message="The sandbox proxy did not answer",
        ) from exc
    out = [(k, v) for k, v in upstream.headers.multi_items() if k.lower() not in _RESPONSE_DROP]
    if path == "files" and request.method in ("GET", "HEAD") and upstream.status_code == 200:
        out = [(k, v) for k, v in out if k.lower() != "content-type"]
        out.append(("content-type", "application/octet-stream"))
        out.append(("content-disposition", attachment(request.query_params.get("path", ""))))

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.aiter_raw():
                yield chunk
        finally:
            await upstream.aclose()

    response = StreamingResponse(
        body(), status_code=upstream.status_code, background=BackgroundTask(upstream.aclose)
    )
    response.raw_headers = [
        *(h for h in response.raw_headers if h[0] != b"content-type"),
        *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in out),
    ]
    return response


def attachment(path: str) -> str:
    name = path.rstrip("/").rsplit("/", 1)[-1] or "download"
    return f"attachment; filename*=UTF-8''{quote(name, safe='')}"


def bridge_unconfigured() -> UnavailableError:
    """The error of a bridge on an api that knows no sandbox proxy."""
    return UnavailableError(
        "no sandbox proxy configured for the dashboard",
        public_message="This api reaches no sandbox proxy: set HUTCH_DASHBOARD_SANDBOX_URL "
        "to the edge proxy's URL (docs/dashboard.md)",
    )
