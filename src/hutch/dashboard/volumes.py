"""``/dashboard/volumes/{id}/content/{dir|file|path}``: the volume file browser's calls.

E2B's volume content API (``/volumecontent/{id}/...``) takes the volume's own token as
``Authorization: Bearer``, which the API bridge strips. Here the volume is first looked up
with the session's key exactly as ``GET /volumes/{id}`` does (the key check, then the
volume service's ``get`` for the caller's team): another team's volume, or one that does
not exist, gets the API's own 404. A fresh content token is then minted server-side
(``issue_token``, what ``GET /volumes/{id}`` hands the SDK) and the call goes in-process
into the api's own ``/volumecontent/{id}/{op}`` route with it: the same checks, path
rules, quota (507) and bodies as the SDK gets. The token never reaches the browser.

Only the browser's calls pass (:data:`ALLOWED`); a download is always an attachment of
type ``application/octet-stream`` (as the envd bridge serves one), so a volume's file can
never render or run as a page of this origin.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import quote

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hutch.api.http.auth import context
from hutch.api.models import Volume
from hutch.dashboard.envd import attachment
from hutch.dashboard.forward import call_scope
from hutch.shared.errors import NotFoundError

#: op → methods the bridge passes to ``/volumecontent/{id}/{op}``.
ALLOWED: Final[dict[str, frozenset[str]]] = {
    "dir": frozenset({"GET", "POST"}),
    "file": frozenset({"GET", "HEAD", "PUT"}),
    "path": frozenset({"GET", "DELETE"}),
}
METHODS: Final = sorted({m for ms in ALLOWED.values() for m in ms})


def check_allowed(op: str, method: str) -> None:
    """NotFoundError (404) unless the bridge passes ``method`` on ``op``."""
    if method.upper() not in ALLOWED.get(op, frozenset()):
        raise NotFoundError(
            f"volume bridge refuses {method} {op}",
            public_message=f"The volume bridge does not offer {method} content/{op} (it "
            "passes GET/POST dir, GET/PUT file, GET/DELETE path)",
        )


async def resolve_volume(request: Request, *, api_key: str) -> tuple[Volume, str]:
    """The caller's volume named in the path and a fresh content token for it, checked as
    ``GET /volumes/{id}`` checks it: :class:`UnauthenticatedError` for a key that no longer
    works, :class:`NotFoundError` for another team's or an unknown volume."""
    ctx = context(request)
    caller = await ctx.keys.authenticate_caller(api_key=api_key)
    volume = await ctx.volumes.get(
        team_id=caller.team.id, id_or_name=str(request.path_params["volume_id"])
    )
    return volume, ctx.volumes.issue_token(volume)


def inner_scope(scope: Scope, *, volume_id: str, op: str, token: str) -> Scope:
    """The scope of ``/volumecontent/{volume_id}/{op}`` with the volume's token, the
    browser's credentials dropped, the query string kept."""
    path = f"/volumecontent/{volume_id}/{op}"
    return call_scope(
        scope,
        path=path,
        raw_path=quote(path).encode(),
        credential=(b"authorization", f"Bearer {token}".encode()),
    )


async def forward(
    api: ASGIApp,
    request: Request,
    send: Send,
    receive: Receive,
    *,
    volume_id: str,
    op: str,
    token: str,
) -> None:
    """Run the content call in ``api``; a file's content comes back as an attachment."""
    download = op == "file" and request.method in ("GET", "HEAD")
    name = request.query_params.get("path", "")

    async def relay(message: Message) -> None:
        if (
            download
            and message["type"] == "http.response.start"
            and message["status"] in (200, 206)
        ):
            headers = [
                (k, v)
                for k, v in message.get("headers", ())
                if k.lower() not in (b"content-type", b"content-disposition")
            ]
            headers.append((b"content-type", b"application/octet-stream"))
            headers.append((b"content-disposition", attachment(name).encode("latin-1")))
            message = {**message, "headers": headers}
        await send(message)

    scope = inner_scope(request.scope, volume_id=volume_id, op=op, token=token)
    await api(scope, receive, relay)
