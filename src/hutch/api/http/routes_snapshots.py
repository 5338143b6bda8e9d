"""Snapshots and fork (e2b-compat §2.1, P2; issue 6, docs/pause.md).

* ``POST /sandboxes/{id}/snapshots`` ``{name?, memory?}`` → 201 ``{snapshotID, names}``;
  only the filesystem is captured, said by ``Hutch-Snapshot: filesystem``;
* ``GET /snapshots?sandboxID=&name=&limit=&nextToken=`` → 200 ``[{snapshotID, names}]``
  and ``X-Next-Token``;
* ``POST /sandboxes/{id}/fork`` ``{timeout?, count?}`` → 201 ``[{sandbox} | {error}]``;
* delete is ``DELETE /templates/{snapshotID}`` (``routes_templates.py`` asks this service
  first).
"""

from __future__ import annotations

from typing import Any, Final

from pydantic import Field, StrictBool, StrictInt, StrictStr
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hutch.api.http.auth import authenticate, context
from hutch.api.http.query import parse_limit, read_body, sandbox_id_param
from hutch.api.http.schemas import _Body, sandbox_body
from hutch.api.models import Snapshot
from hutch.shared.errors import http_status

_FILESYSTEM_ONLY: Final = {"Hutch-Snapshot": "filesystem"}


class SnapshotBody(_Body):
    """``SandboxSnapshotRequest``."""

    name: StrictStr | None = None
    memory: StrictBool | None = None


class ForkBody(_Body):
    """``SandboxForkRequest``."""

    timeout: StrictInt | None = None
    count: StrictInt | None = Field(default=None)


def snapshot_body(snapshot: Snapshot) -> dict[str, Any]:
    """``SnapshotInfo``."""
    return {"snapshotID": snapshot.id, "names": [snapshot.alias] if snapshot.alias else []}


async def create_snapshot(request: Request) -> Response:
    """``POST /sandboxes/{id}/snapshots`` → 201 ``SnapshotInfo``."""
    team = await authenticate(request)
    body = await read_body(request, SnapshotBody, optional=True)
    snapshot = await context(request).snapshots.create_snapshot(
        team_id=team.id, sandbox_id=sandbox_id_param(request), name=body.name or None
    )
    return JSONResponse(snapshot_body(snapshot), status_code=201, headers=_FILESYSTEM_ONLY)


async def list_snapshots(request: Request) -> Response:
    """``GET /snapshots`` → 200 ``[SnapshotInfo]`` and ``X-Next-Token``."""
    team = await authenticate(request)
    q = request.query_params
    page = await context(request).snapshots.list_snapshots(
        team_id=team.id,
        sandbox_id=q.get("sandboxID") or None,
        name=q.get("name") or None,
        limit=parse_limit(q.get("limit")),
        next_token=q.get("nextToken") or None,
    )
    headers = {"X-Next-Token": page.next_token} if page.next_token else {}
    return JSONResponse([snapshot_body(s) for s in page.items], headers=headers)


async def fork(request: Request) -> Response:
    """``POST /sandboxes/{id}/fork`` → 201, one ``{sandbox}`` or ``{error}`` per fork."""
    team = await authenticate(request)
    body = await read_body(request, ForkBody, optional=True)
    ctx = context(request)
    results = await ctx.snapshots.fork(
        team_id=team.id,
        sandbox_id=sandbox_id_param(request),
        count=1 if body.count is None else body.count,
        timeout_s=body.timeout,
    )
    out: list[dict[str, Any]] = []
    for result in results:
        if result.sandbox is not None:
            out.append({"sandbox": sandbox_body(result.sandbox, domain=ctx.domain)})
        else:
            assert result.error is not None
            error: dict[str, Any] = {
                "code": http_status(result.error),
                "message": result.error.public_message,
            }
            if result.error.error_code is not None:
                error["error_code"] = result.error.error_code
            out.append({"error": error})
    return JSONResponse(out, status_code=201, headers=_FILESYSTEM_ONLY)


ROUTES: Final = [
    Route("/sandboxes/{sandbox_id}/snapshots", create_snapshot, methods=["POST"]),
    Route("/snapshots", list_snapshots, methods=["GET"]),
    Route("/sandboxes/{sandbox_id}/fork", fork, methods=["POST"]),
]
