"""``/volumes``: E2B's team volumes (``POST``, ``GET``, ``GET/DELETE /volumes/{idOrName}``)."""

from __future__ import annotations

from typing import Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hutch.api.http.auth import authenticate, context
from hutch.api.http.query import read_body
from hutch.api.http.schemas import NewVolumeBody, volume_body
from hutch.shared.errors import InvalidArgumentError


async def create_volume(request: Request) -> Response:
    """``POST /volumes`` ``{name, sizeMB?}`` → 201 ``VolumeAndToken``."""
    team = await authenticate(request)
    body = await read_body(request, NewVolumeBody)
    service = context(request).volumes
    volume = await service.create(team=team, name=body.name, size_mb=body.size_mb)
    return JSONResponse(volume_body(volume, token=service.issue_token(volume)), status_code=201)


async def list_volumes(request: Request) -> Response:
    """``GET /volumes`` → 200 ``[Volume]`` (the caller's team only)."""
    team = await authenticate(request)
    volumes = await context(request).volumes.list(team_id=team.id)
    return JSONResponse([volume_body(v) for v in volumes])


async def get_volume(request: Request) -> Response:
    """``GET /volumes/{idOrName}`` → 200 ``VolumeAndToken`` with a fresh token, plus the
    volume's used and total bytes (left out while its node is unavailable)."""
    team = await authenticate(request)
    service = context(request).volumes
    volume = await service.get(team_id=team.id, id_or_name=request.path_params["volume_id"])
    usage = await service.usage_if_reachable(volume)
    return JSONResponse(volume_body(volume, token=service.issue_token(volume), usage=usage))


async def delete_volume(request: Request) -> Response:
    """``DELETE /volumes/{idOrName}[?force=true]`` → 204."""
    team = await authenticate(request)
    force = request.query_params.get("force", "false").lower()
    if force not in ("true", "false", "1", "0"):
        raise InvalidArgumentError(f"force {force!r}: must be true or false")
    await context(request).volumes.delete(
        team_id=team.id, id_or_name=request.path_params["volume_id"], force=force in ("true", "1")
    )
    return Response(status_code=204)


ROUTES: Final = [
    Route("/volumes", create_volume, methods=["POST"]),
    Route("/volumes", list_volumes, methods=["GET"]),
    Route("/volumes/{volume_id}", get_volume, methods=["GET"]),
    Route("/volumes/{volume_id}", delete_volume, methods=["DELETE"]),
]
