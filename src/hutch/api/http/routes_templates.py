"""``GET /templates``: the team's templates in E2B's ``Template`` shape."""

from __future__ import annotations

from typing import Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hutch.api.http.auth import authenticate, context
from hutch.api.http.schemas import template_body


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


ROUTES: Final = [Route("/templates", list_templates, methods=["GET"])]
