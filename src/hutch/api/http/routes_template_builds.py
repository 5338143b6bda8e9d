"""E2B's template build endpoints, as SDK 2.63's ``Template.build`` calls them.

``POST /v3/templates`` → 202, ``GET /templates/{id}/files/{hash}`` → 201 ``{present, url}``,
``PUT`` that URL (signed, no key), ``POST /v2/templates/{id}/builds/{buildID}`` → 202,
``GET /templates/{id}/builds/{buildID}/status?logsOffset=N`` → 200, and
``GET /templates/aliases/{alias}`` (``Template.exists``).
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hutch.api.http.auth import authenticate, context
from hutch.api.http.query import read_body
from hutch.api.http.schemas import _Body, iso
from hutch.api.service.logs import LogDirection, LogsQuery, select_log_lines
from hutch.api.service.template_builds import TemplateBuildService
from hutch.api.service.template_tags import TemplateTagService
from hutch.shared.errors import (
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
)

_HASH_RE: Final = re.compile(r"^[A-Za-z0-9_-]{8,128}$")
#: At most this many log entries per status answer (E2B's page size).
_LOGS_PAGE: Final = 100


class BuildRequestBody(_Body):
    """``TemplateBuildRequestV3``."""

    name: str
    tags: list[str] | None = None
    cpu_count: int | None = None
    memory_mb: int | None = None


def _builds(request: Request) -> TemplateBuildService:
    builds = context(request).builds
    if builds is None:
        raise InvalidArgumentError("this server does not build templates")
    return builds


def _files_hash(request: Request) -> str:
    files_hash = str(request.path_params["hash"])
    if not _HASH_RE.match(files_hash):
        raise InvalidArgumentError(f"invalid files hash {files_hash!r}")
    return files_hash


async def request_build(request: Request) -> Response:
    """``POST /v3/templates`` → 202 ``TemplateRequestResponseV3``."""
    team = await authenticate(request)
    raw = await read_body(request, BuildRequestBody)
    extra = raw.model_extra or {}
    template, build, tags = await _builds(request).request_build(
        team_id=team.id,
        name=raw.name,
        cpu_count=extra.get("cpuCount") or raw.cpu_count,
        memory_mb=extra.get("memoryMB") or raw.memory_mb,
        tags=raw.tags,
    )
    names = [template.alias] if template.alias else []
    return JSONResponse(
        {
            "templateID": template.id,
            "buildID": build.build_id,
            "public": template.public,
            "names": names,
            "aliases": names,
            "tags": tags,
        },
        status_code=202,
    )


async def file_upload_link(request: Request) -> Response:
    """``GET /templates/{id}/files/{hash}`` → 201 ``{present, url}``."""
    team = await authenticate(request)
    builds = _builds(request)
    template = await builds.get_own_template(
        str(request.path_params["template_id"]), team_id=team.id
    )
    files_hash = _files_hash(request)
    if await builds.runner.has_files(files_hash):
        return JSONResponse({"present": True}, status_code=201)
    token = builds.upload_tokens.sign(template.id, files_hash)
    url = str(request.url.replace(query=f"token={token}"))
    return JSONResponse({"present": False, "url": url}, status_code=201)


async def upload_files(request: Request) -> Response:
    """``PUT /templates/{id}/files/{hash}?token=`` → 200 (the body is the archive)."""
    template_id = str(request.path_params["template_id"])
    files_hash = _files_hash(request)
    token = request.query_params.get("token", "")
    builds = _builds(request)
    if not token or not builds.upload_tokens.check(template_id, files_hash, token):
        raise UnauthenticatedError("invalid or missing upload token")
    await builds.runner.store_files(files_hash, request.stream())
    return Response(status_code=200)


async def start_build(request: Request) -> Response:
    """``POST /v2/templates/{id}/builds/{buildID}`` → 202."""
    team = await authenticate(request)
    body: Any = await request.json()
    if not isinstance(body, dict):
        raise InvalidArgumentError("the request body must be a JSON object")
    await _builds(request).start_build(
        str(request.path_params["template_id"]),
        str(request.path_params["build_id"]),
        body,
        team_id=team.id,
    )
    return Response(status_code=202)


async def build_status(request: Request) -> Response:
    """``GET /templates/{id}/builds/{buildID}/status?logsOffset=N`` → ``TemplateBuildInfo``."""
    team = await authenticate(request)
    build = await _builds(request).get_build(
        str(request.path_params["template_id"]),
        str(request.path_params["build_id"]),
        team_id=team.id,
    )
    try:
        offset = max(0, int(request.query_params.get("logsOffset", "0")))
    except ValueError:
        raise InvalidArgumentError("logsOffset must be an integer") from None
    page = build.entries[offset : offset + _LOGS_PAGE]
    entries = [_entry(e) for e in page]
    body: dict[str, Any] = {
        "templateID": build.template_id,
        "buildID": build.build_id,
        "status": build.status,
        "logs": [f"[{iso(e.timestamp)}] {e.message}" for e in page],
        "logEntries": entries,
    }
    if build.reason is not None:
        reason: dict[str, Any] = {"message": build.reason}
        if build.reason_step is not None:
            reason["step"] = build.reason_step
        reason["logEntries"] = [_entry(e) for e in build.entries if e.level == "error"][-10:]
        body["reason"] = reason
    return JSONResponse(body)


def _entry(entry: Any) -> dict[str, Any]:
    out = {"timestamp": iso(entry.timestamp), "level": entry.level, "message": entry.message}
    if entry.step is not None:
        out["step"] = entry.step
    return out


def _int_param(value: str | None, *, field: str) -> int | None:
    if not value:
        return None
    try:
        number = int(value)
    except ValueError:
        raise InvalidArgumentError(f"{field} must be an integer, not {value!r}") from None
    if number < 0:
        raise InvalidArgumentError(f"{field} must not be negative")
    return number


async def build_logs(request: Request) -> Response:
    """``GET /templates/{id}/builds/{buildID}/logs?cursor=&limit=&direction=&level=&source=``
    → 200 ``TemplateBuildLogsResponse`` (infra's ``template_build_logs.go``): ``cursor`` in
    unix ms, forward (at or after, oldest first) or backward (at or before, newest first),
    ``level`` the minimum, ``limit`` at most 100; a build still waiting has no logs yet.
    ``source`` (temporary or persistent) is accepted: hutch keeps one copy."""
    team = await authenticate(request)
    build_id = str(request.path_params["build_id"])
    try:
        uuid.UUID(build_id)
    except ValueError:
        raise InvalidArgumentError("Invalid build id") from None
    q = request.query_params
    direction = q.get("direction") or "forward"
    if direction not in {d.value for d in LogDirection}:
        raise InvalidArgumentError(f"direction must be forward or backward, not {direction!r}")
    source = q.get("source")
    if source not in (None, "", "temporary", "persistent"):
        raise InvalidArgumentError(f"source must be temporary or persistent, not {source!r}")
    cursor = _int_param(q.get("cursor"), field="cursor")
    limit = _int_param(q.get("limit"), field="limit")
    try:
        build = await _builds(request).get_build(
            str(request.path_params["template_id"]), build_id, team_id=team.id
        )
    except NotFoundError:
        # infra answers 400 here; hutch answers 404 as for every other unknown or another
        # team's id (ADR 0015), the same for both, so nothing says the build exists.
        raise NotFoundError(
            f"build {build_id} not found", public_message=f"Build '{build_id}' not found"
        ) from None
    if build.status == "waiting":
        return JSONResponse({"logs": []})
    query = LogsQuery(
        cursor=datetime.fromtimestamp(cursor / 1000, UTC) if cursor is not None else None,
        limit=min(limit, _LOGS_PAGE) if limit is not None else _LOGS_PAGE,
        direction=LogDirection(direction),
        min_level=q.get("level") or None,
    )
    return JSONResponse({"logs": [_entry(e) for e in select_log_lines(build.entries, query)]})


async def alias_exists(request: Request) -> Response:
    """``GET /templates/aliases/{alias}`` → 200 (yours), 403 (another team's), 404."""
    team = await authenticate(request)
    alias = str(request.path_params["alias"])
    found = await context(request).templates.find_any(alias)
    if found is None:
        raise NotFoundError(f"template alias {alias!r} not found")
    if found.team_id != team.id and not found.public:
        raise PermissionDeniedError(f"template alias {alias!r} belongs to another team")
    return JSONResponse({"templateID": found.id, "public": found.public})


class AssignTagsBody(_Body):
    """``AssignTemplateTagsRequest``."""

    target: str
    tags: list[str]


class DeleteTagsBody(_Body):
    """``DeleteTemplateTagsRequest``."""

    name: str
    tags: list[str]


def _tags(request: Request) -> TemplateTagService:
    tags = context(request).tags
    if tags is None:
        raise InvalidArgumentError("this server does not offer template tags")
    return tags


async def assign_tags(request: Request) -> Response:
    """``POST /templates/tags`` → 201 ``AssignedTemplateTags``: point ``tags`` at the build
    ``target`` (``name:tag``; ``name`` is ``name:default``) names."""
    team = await authenticate(request)
    body = await read_body(request, AssignTagsBody)
    build_id = await _tags(request).assign(body.target, body.tags, team_id=team.id)
    return JSONResponse(
        {"tags": list(dict.fromkeys(body.tags)), "buildID": build_id}, status_code=201
    )


async def delete_tags(request: Request) -> Response:
    """``DELETE /templates/tags`` → 204; 404 when a tag is not assigned (none is removed)."""
    team = await authenticate(request)
    body = await read_body(request, DeleteTagsBody)
    await _tags(request).remove(body.name, body.tags, team_id=team.id)
    return Response(status_code=204)


async def list_tags(request: Request) -> Response:
    """``GET /templates/{id}/tags`` → 200 ``[TemplateTag]``."""
    team = await authenticate(request)
    found = await _tags(request).list(str(request.path_params["template_id"]), team_id=team.id)
    return JSONResponse(
        [{"tag": t.tag, "buildID": t.build_id, "createdAt": iso(t.created_at)} for t in found]
    )


ROUTES: Final = [
    Route("/templates/tags", assign_tags, methods=["POST"]),
    Route("/templates/tags", delete_tags, methods=["DELETE"]),
    Route("/templates/{template_id}/tags", list_tags, methods=["GET"]),
    Route("/v3/templates", request_build, methods=["POST"]),
    Route("/templates/aliases/{alias}", alias_exists, methods=["GET"]),
    Route("/templates/{template_id}/files/{hash}", file_upload_link, methods=["GET"]),
    Route("/templates/{template_id}/files/{hash}", upload_files, methods=["PUT"]),
    Route("/v2/templates/{template_id}/builds/{build_id}", start_build, methods=["POST"]),
    Route("/templates/{template_id}/builds/{build_id}/status", build_status, methods=["GET"]),
    Route("/templates/{template_id}/builds/{build_id}/logs", build_logs, methods=["GET"]),
]
