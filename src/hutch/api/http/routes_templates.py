"""``GET /templates`` (E2B's shape), ``DELETE /templates/{id}``, and hutch's own
``POST /templates/from-image`` (import an OCI image as a template)."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from hutch.api.http.auth import HttpContext, authenticate, context
from hutch.api.http.errors import error_body
from hutch.api.http.query import parse_limit, read_body
from hutch.api.http.schemas import (
    ImportImageBody,
    TemplateUpdateBody,
    build_body,
    current_build_body,
    template_body,
)
from hutch.api.models import Template
from hutch.api.service.ports import ImageImport, ImportProgress
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


_NDJSON: Final = "application/x-ndjson"
_PROGRESS_EVERY_S: Final = 0.1
#: Imports running for streamed requests (a client that leaves does not stop them).
_RUNNING: set[asyncio.Task[Any]] = set()


def _host_caller(request: Request, host_key_file: Path | None) -> bool:
    """The caller sent the content of ``<home>/cli.key``: it can read the host's home."""
    sent = request.headers.get("x-hutch-host-key")
    if not sent or host_key_file is None:
        return False
    try:
        expected = host_key_file.read_text().strip()
    except OSError:
        return False
    return bool(expected) and hmac.compare_digest(sent.encode(), expected.encode())


async def import_image(request: Request) -> Response:
    """``POST /templates/from-image`` → 201 ``Template`` plus the artifact's facts.

    Blocks until the template is built (an import is seconds to minutes); 409 for a taken
    name, 400 with the reason for a bad image. With ``Accept: application/x-ndjson`` the
    answer is 200 and a stream of JSON lines instead: ``{"type": "progress", "stage",
    "done", "total"}`` while layers unpack and the artifact seals, then one
    ``{"type": "result", "template": {...}}`` or ``{"type": "error", "code", "message"}``
    (the status and message the plain request would have answered).

    ``envdPath`` (a host path) is accepted only with ``X-Hutch-Host-Key``, the content of
    the home's root-only ``cli.key`` (what ``hutch template create-from-image`` sends).
    """
    team = await authenticate(request)
    ctx = context(request)
    body = await read_body(request, ImportImageBody)
    envd_path = (body.model_extra or {}).get("envdPath")
    if envd_path is not None:
        if not _host_caller(request, ctx.host_key_file):
            raise InvalidArgumentError("envdPath is only accepted by the CLI on the host")
        if not isinstance(envd_path, str) or not Path(envd_path).is_absolute():
            raise InvalidArgumentError("envdPath: want an absolute path on the host")
        if not body.enable_inject_envd:
            raise InvalidArgumentError("envdPath needs enableInjectEnvd")
    values = {
        "cpu_count": body.cpu_count, "memory_mb": body.memory_mb, "disk_mb": body.disk_size_mb,
        "start_cmd": body.start_cmd, "ready_cmd": body.ready_cmd,
    }  # fmt: skip
    spec = ImageImport(
        source=body.source, name=body.name, inject_envd=body.enable_inject_envd,
        envd_path=envd_path, **{k: v for k, v in values.items() if v is not None},  # type: ignore[arg-type]
    )  # fmt: skip

    async def run(progress: ImportProgress | None = None) -> dict[str, Any]:
        template, imported = await ctx.templates.create_from_image(
            spec, team_id=team.id, progress=progress
        )
        data = template_body(template, default_envd_version=ctx.envd_version)
        data.update(
            fingerprint=imported.fingerprint, cacheHit=imported.cache_hit,
            envdInjected=imported.envd_injected, envdSHA256=imported.envd_sha256,
        )  # fmt: skip
        return data

    if _NDJSON not in request.headers.get("accept", ""):
        # Shielded: a client that disconnects mid-import must not leave a half-registered one.
        return JSONResponse(await asyncio.shield(run()), status_code=201)
    return StreamingResponse(_stream(request, run), media_type=_NDJSON)


async def _stream(
    request: Request, run: Callable[[ImportProgress], Awaitable[dict[str, Any]]]
) -> AsyncIterator[bytes]:
    """The import's progress as JSON lines, then its result or its error."""
    loop = asyncio.get_running_loop()
    latest: dict[str, tuple[int, int]] = {}
    wake = asyncio.Event()

    posted: dict[str, float] = {}

    def progress(stage: str, done: int, total: int) -> None:  # called from a worker thread
        # Called per read of a layer: hand the loop at most one update per stage per
        # _PROGRESS_EVERY_S (and every stage's first and last), not thousands.
        now = time.monotonic()
        last = posted.get(stage)
        if last is not None and done < total and now - last < _PROGRESS_EVERY_S:
            return
        posted[stage] = now

        def note() -> None:
            latest[stage] = (done, total)
            wake.set()

        loop.call_soon_threadsafe(note)

    task = asyncio.create_task(run(progress), name="hutch-import-image")
    _RUNNING.add(task)
    task.add_done_callback(_RUNNING.discard)
    while not task.done():
        waiter = asyncio.ensure_future(wake.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        wake.clear()
        for stage, (done, total) in list(latest.items()):
            yield _line({"type": "progress", "stage": stage, "done": done, "total": total})
        latest.clear()
    try:
        result = task.result()
    except Exception as exc:
        status, message, _retryable = error_body(request, exc)
        yield _line({"type": "error", "code": status, "message": message})
    else:
        yield _line({"type": "result", "template": result})


def _line(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode() + b"\n"


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
    Route("/templates/from-image", import_image, methods=["POST"]),
    Route("/templates/{template_id}", get_template, methods=["GET"]),
    Route("/templates/{template_id}", delete_template, methods=["DELETE"]),
    Route("/templates/{template_id}", update_template, methods=["PATCH"]),
    Route("/v2/templates/{template_id}", update_template_v2, methods=["PATCH"]),
]
