"""hutch's own ``POST /templates/from-image`` (import an OCI image as a template) and
``GET /templates/imports/{importID}`` (an import's state, from any api).

An import is a job in the store (ADR 0030): the POST queues it and follows its row to the
end; any api's import worker runs it. The answer names the job in ``X-Hutch-Import-Id``,
so a client whose api went away follows it through another one.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from hutch.api.http.auth import HttpContext, authenticate, context
from hutch.api.http.errors import error_body, error_response
from hutch.api.http.query import read_body
from hutch.api.http.schemas import ImportImageBody, template_body
from hutch.api.service.ports import ImageImport
from hutch.api.service.template_imports import TemplateImportService
from hutch.shared.errors import InvalidArgumentError, UnavailableError
from hutch.shared.ids import TeamID

_NDJSON: Final = "application/x-ndjson"
#: The response header naming the import's job.
IMPORT_ID_HEADER: Final = "X-Hutch-Import-Id"


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


def _imports(ctx: HttpContext) -> TemplateImportService:
    if ctx.imports is None:
        raise UnavailableError("this server cannot build templates (no builder configured)")
    return ctx.imports


async def _spec(request: Request, ctx: HttpContext) -> ImageImport:
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
    return ImageImport(
        source=body.source, name=body.name, inject_envd=body.enable_inject_envd,
        envd_path=envd_path, **{k: v for k, v in values.items() if v is not None},  # type: ignore[arg-type]
    )  # fmt: skip


async def import_image(request: Request) -> Response:
    """``POST /templates/from-image`` → 201 ``Template`` plus the artifact's facts.

    Blocks until the template is built (an import is seconds to minutes); 409 for a taken
    name, 400 with the reason for a bad image. With ``Accept: application/x-ndjson`` the
    answer is 200 and a stream of JSON lines instead: ``{"type": "progress", "stage",
    "done", "total"}`` while layers unpack and the artifact seals, then one
    ``{"type": "result", "template": {...}}`` or ``{"type": "error", "code", "message"}``
    (the status and message the plain request would have answered). A client that leaves
    does not stop the import: it is a job, and ``X-Hutch-Import-Id`` names it.

    ``envdPath`` (a host path) is accepted only with ``X-Hutch-Host-Key``, the content of
    the home's root-only ``cli.key`` (what ``hutch template create-from-image`` sends).
    """
    team = await authenticate(request)
    ctx = context(request)
    spec = await _spec(request, ctx)
    streamed = _NDJSON in request.headers.get("accept", "")
    try:
        record = await _imports(ctx).submit(spec, team_id=team.id)
    except Exception as exc:
        if not streamed:
            raise
        status, message, _retryable = error_body(request, exc)
        line = _line({"type": "error", "code": status, "message": message})
        return StreamingResponse(iter([line]), media_type=_NDJSON)
    headers = {IMPORT_ID_HEADER: record.import_id}
    if streamed:
        return StreamingResponse(
            _stream(request, ctx, record.import_id, team.id), media_type=_NDJSON, headers=headers
        )
    last = record
    async for seen in _imports(ctx).follow(record.import_id, team_id=team.id):
        last = seen
    if last.status == "error":
        response = error_response(
            last.error_status, last.error_message, retryable=last.error_status == 503
        )
        response.headers[IMPORT_ID_HEADER] = record.import_id
        return response
    return JSONResponse(await _result(ctx, last), status_code=201, headers=headers)


async def get_import(request: Request) -> Response:
    """``GET /templates/imports/{importID}`` → 200: the import's state, as any api reads it
    (``status`` ``queued | running | ready | error``, ``progress`` per stage, ``attempts``
    = claims so far, ``template`` once ready, ``error`` ``{code, message}`` once failed).
    With ``Accept: application/x-ndjson``: the POST's stream, from the latest progress on."""
    team = await authenticate(request)
    ctx = context(request)
    import_id = str(request.path_params["import_id"])
    record = await _imports(ctx).get(import_id, team_id=team.id)
    if _NDJSON in request.headers.get("accept", ""):
        return StreamingResponse(_stream(request, ctx, import_id, team.id), media_type=_NDJSON)
    body: dict[str, Any] = {
        "importID": record.import_id, "templateID": record.name, "status": record.status,
        "attempts": record.attempts,
        "progress": [{"stage": s, "done": d, "total": t} for s, (d, t) in record.progress.items()],
        "createdAt": record.created_at.isoformat(),
        "finishedAt": record.finished_at.isoformat() if record.finished_at else None,
    }  # fmt: skip
    if record.status == "ready":
        body["template"] = await _result(ctx, record)
    elif record.status == "error":
        body["error"] = {"code": record.error_status, "message": record.error_message}
    return JSONResponse(body)


async def _result(ctx: HttpContext, record: Any) -> dict[str, Any]:
    """A ready import's answer: its template (``Template``) and the artifact's facts."""
    template = await _imports(ctx).template_of(record)
    data: dict[str, Any] = (
        template_body(template, default_envd_version=ctx.envd_version)
        if template is not None
        else {"templateID": record.name}  # deleted since
    )
    data.update(record.result or {})
    return data


async def _stream(
    request: Request, ctx: HttpContext, import_id: str, team_id: TeamID
) -> AsyncIterator[bytes]:
    """The import's progress as JSON lines, each stage when it moved, then its outcome."""
    shown: dict[str, tuple[int, int]] = {}
    try:
        async for record in _imports(ctx).follow(import_id, team_id=team_id):
            for stage, value in record.progress.items():
                if shown.get(stage) != value:
                    shown[stage] = value
                    yield _line({"type": "progress", "stage": stage, "done": value[0],
                                 "total": value[1]})  # fmt: skip
            if record.status == "ready":
                yield _line({"type": "result", "template": await _result(ctx, record)})
            elif record.status == "error":
                yield _line({"type": "error", "code": record.error_status,
                             "message": record.error_message})  # fmt: skip
    except Exception as exc:  # the store failed mid-stream: say so in the stream's terms
        status, message, _retryable = error_body(request, exc)
        yield _line({"type": "error", "code": status, "message": message})


def _line(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode() + b"\n"


ROUTES: Final = [
    Route("/templates/from-image", import_image, methods=["POST"]),
    Route("/templates/imports/{import_id}", get_import, methods=["GET"]),
]
