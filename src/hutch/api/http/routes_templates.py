"""``GET /templates`` (E2B's shape), ``DELETE /templates/{id}``, and hutch's own
``POST /templates/from-image`` (import an OCI image as a template)."""

from __future__ import annotations

import asyncio
from typing import Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hutch.api.http.auth import authenticate, context
from hutch.api.http.query import read_body
from hutch.api.http.schemas import ImportImageBody, template_body
from hutch.api.service.ports import ImageImport
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


async def import_image(request: Request) -> Response:
    """``POST /templates/from-image`` → 201 ``Template`` plus the artifact's facts.

    Blocks until the template is built (an import is seconds to minutes); 409 for a taken
    name, 400 with the reason for a bad image.
    """
    team = await authenticate(request)
    ctx = context(request)
    body = await read_body(request, ImportImageBody)
    if "envdPath" in (body.model_extra or {}):
        raise InvalidArgumentError("envdPath is only accepted by the CLI on the host")
    values = {
        "cpu_count": body.cpu_count, "memory_mb": body.memory_mb,
        "start_cmd": body.start_cmd, "ready_cmd": body.ready_cmd,
    }  # fmt: skip
    spec = ImageImport(
        source=body.source, name=body.name, inject_envd=body.enable_inject_envd,
        **{k: v for k, v in values.items() if v is not None},  # type: ignore[arg-type]
    )  # fmt: skip
    # Shielded: a client that disconnects mid-import must not leave a half-registered one.
    template, imported = await asyncio.shield(
        ctx.templates.create_from_image(spec, team_id=team.id)
    )
    data = template_body(template, default_envd_version=ctx.envd_version)
    data.update(
        fingerprint=imported.fingerprint, cacheHit=imported.cache_hit,
        envdInjected=imported.envd_injected, envdSHA256=imported.envd_sha256,
    )  # fmt: skip
    return JSONResponse(data, status_code=201)


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
    Route("/templates/from-image", import_image, methods=["POST"]),
    Route("/templates/{template_id}", delete_template, methods=["DELETE"]),
]
