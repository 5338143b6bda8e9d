"""``/api-keys`` and ``/teams``: a team's API keys and the caller's teams, as E2B's CLI
and dashboard call them (infra's ``apikey.go``, ``teams.go``).

Statuses as infra answers them: ``POST /api-keys`` 201 ``CreatedTeamAPIKey`` (the only
time the key is shown), ``GET`` 200 ``[TeamAPIKey]``, ``PATCH /api-keys/{id}`` 202 (no
body), ``DELETE`` 204; an unknown (or another team's) key 404 "id not found", an id that
is not a UUID 400. Who the caller is: ``service/keys.py``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hutch.api.http.auth import authenticate_user, context
from hutch.api.http.query import read_body
from hutch.api.http.schemas import KeyNameBody, api_key_body, team_body


async def list_keys(request: Request) -> Response:
    """``GET /api-keys`` → 200 ``[TeamAPIKey]``."""
    team = await authenticate_user(request)
    keys = await context(request).keys.list_keys(team_id=team.id)
    return JSONResponse([api_key_body(k) for k in keys])


async def create_key(request: Request) -> Response:
    """``POST /api-keys`` ``{name}`` → 201 ``CreatedTeamAPIKey``."""
    team = await authenticate_user(request)
    body = await read_body(request, KeyNameBody)
    created = await context(request).keys.create_named_key(team_id=team.id, name=body.name)
    return JSONResponse(api_key_body(created.api_key, secret=created.secret), status_code=201)


async def rename_key(request: Request) -> Response:
    """``PATCH /api-keys/{apiKeyID}`` ``{name}`` → 202."""
    team = await authenticate_user(request)
    body = await read_body(request, KeyNameBody)
    await context(request).keys.rename_key(
        team_id=team.id, key_id=str(request.path_params["key_id"]), name=body.name
    )
    return Response(status_code=202)


async def delete_key(request: Request) -> Response:
    """``DELETE /api-keys/{apiKeyID}`` → 204."""
    team = await authenticate_user(request)
    await context(request).keys.delete_key(
        team_id=team.id, key_id=str(request.path_params["key_id"])
    )
    return Response(status_code=204)


async def list_teams(request: Request) -> Response:
    """``GET /teams`` → 200 ``[Team]``, each with a new key named "CLI login/configure"
    (what ``e2b auth login``/``configure`` stores), as infra issues one per call."""
    team = await authenticate_user(request, api_key_allowed=False)
    teams = await context(request).keys.teams_of(team)
    return JSONResponse([team_body(t, is_default=d, key=k.secret) for t, d, k in teams])


ROUTES = [
    Route("/api-keys", list_keys, methods=["GET"]),
    Route("/api-keys", create_key, methods=["POST"]),
    Route("/api-keys/{key_id}", rename_key, methods=["PATCH"]),
    Route("/api-keys/{key_id}", delete_key, methods=["DELETE"]),
    Route("/teams", list_teams, methods=["GET"]),
]
