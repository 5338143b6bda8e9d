"""``GET /templates`` (E2B's shape), ``DELETE /templates/{id}``, ``PATCH`` (publish);
hutch's own imports from OCI images are ``routes_imports.py``."""

from __future__ import annotations

from typing import Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hutch.api.http.auth import HttpContext, authenticate, context
from hutch.api.http.query import parse_limit, read_body
from hutch.api.http.schemas import (
    TemplateUpdateBody,
    build_body,
    current_build_body,
    template_body,
)
from hutch.api.models import Template
from hutch.shared.errors import InvalidArgumentError


async def list_templates(request: Request) -> Response:
    """``GET /templates[?teamID=]`` → 200 ``[Template]``.

    ``teamID`` is ignored: a key belongs to exactly one team, and naming another team
    must not reveal anything about it.
    """
    team = await authenticate(request)
    ctx = context(request)
    templates = await ctx.templates.list_templates(team_id=team.id)
    return JSONResponse(
        [template_body(t, default_envd_version=ctx.envd_version) for t in templates]
    )


async def list_templates_v2(request: Request) -> Response:
    """``GET /v2/templates[?teamID=&limit=&nextToken=]`` → 200 ``[Template]``, the team's
    own, newest first, ``X-Next-Token`` when more (infra's ``templates_list_v2.go``); a
    ``teamID`` other than the key's team is 400, as infra."""
    team = await authenticate(request)
    ctx = context(request)
    q = request.query_params
    if q.get("teamID") and q["teamID"] != team.id:
        raise InvalidArgumentError("Team ID param mismatch with the API key")
    page, token = await ctx.templates.list_page(
        team_id=team.id, limit=parse_limit(q.get("limit")), next_token=q.get("nextToken") or None
    )
    headers = {"X-Next-Token": token} if token else {}
    body = [template_body(t, default_envd_version=ctx.envd_version) for t in page]
    return JSONResponse(body, headers=headers)


async def get_template(request: Request) -> Response:
    """``GET /templates/{id}[?limit=&nextToken=]`` → 200 ``TemplateWithBuilds``: the
    ``Template`` fields (the SDK's model requires them) and its builds, newest first.
    Builds of the SDK (kept in the store) are listed with their own ids; a template with
    none (built by install.sh, imported from an image) lists its current version."""
    team = await authenticate(request)
    ctx = context(request)
    template = await ctx.templates.get_own(str(request.path_params["template_id"]), team_id=team.id)
    limit = parse_limit(request.query_params.get("limit"))
    runs = await ctx.builds.builds_of(template.id, team_id=team.id) if ctx.builds else []
    body = template_body(template, default_envd_version=ctx.envd_version)
    body["builds"] = [build_body(b) for b in runs][:limit] or [current_build_body(template, body)]
    return JSONResponse(body)


async def _update(request: Request) -> tuple[Template, HttpContext]:
    team = await authenticate(request)
    ctx = context(request)
    body = await read_body(request, TemplateUpdateBody)
    template_id = str(request.path_params["template_id"])
    if body.public is None:
        return await ctx.templates.get_own(template_id, team_id=team.id), ctx
    return await ctx.templates.set_public(template_id, team_id=team.id, public=body.public), ctx


async def update_template_v2(request: Request) -> Response:
    """``PATCH /v2/templates/{id}`` ``{public?}`` → 200 ``TemplateUpdateResponse``
    ``{names}`` (``e2b template publish``; infra's ``template_update.go``)."""
    template, _ctx = await _update(request)
    return JSONResponse({"names": [template.alias] if template.alias else []})


async def update_template(request: Request) -> Response:
    """``PATCH /templates/{id}`` (deprecated) → 200 with a ``null`` body, as infra."""
    await _update(request)
    return JSONResponse(None)


async def delete_template(request: Request) -> Response:
    """``DELETE /templates/{templateID}`` → 204; 404 for another team's or no template."""
    team = await authenticate(request)
    ctx = context(request)
    template_id = str(request.path_params["template_id"])
    # A snapshot (the SDK's delete_snapshot) goes through the snapshot service.
    if not await ctx.snapshots.delete_snapshot(team_id=team.id, id_or_name=template_id):
        await ctx.templates.delete_template(template_id, team_id=team.id)
    return Response(status_code=204)


ROUTES: Final = [
    Route("/templates", list_templates, methods=["GET"]),
    Route("/v2/templates", list_templates_v2, methods=["GET"]),
    Route("/templates/{template_id}", get_template, methods=["GET"]),
    Route("/templates/{template_id}", delete_template, methods=["DELETE"]),
    Route("/templates/{template_id}", update_template, methods=["PATCH"]),
    Route("/v2/templates/{template_id}", update_template_v2, methods=["PATCH"]),
]
