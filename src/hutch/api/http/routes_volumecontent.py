"""``/volumecontent/{volumeID}/...``: a volume's files, with its token as ``Bearer`` (no
sandbox needed). E2B's ``openapi-volumecontent.yml`` plus ``POST .../move`` (hutch's).

Every operation authorises first (401 missing/bad/expired token, 404 a token of another
volume), then validates the path (``volumes.base.normalize_path``), then acts. Uploads are
streamed to a temporary file beside the target and renamed over it when complete, with
envd's ``X-Metadata-*`` rules for ``user.e2b.*`` metadata; a full volume is 507 and leaves
the previous file untouched. Downloads stream and honour one ``Range``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any, Final

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from hutch.api.http.auth import context
from hutch.api.http.query import read_body
from hutch.api.http.schemas import EntryAttrsBody, entry_body
from hutch.api.models import Volume
from hutch.shared.errors import InvalidArgumentError
from hutch.shared.xattrs import metadata_from_headers
from hutch.volumes.base import Owner

_INT_RE: Final = re.compile(r"^[0-9]{1,10}$")
_RANGE_RE: Final = re.compile(r"^bytes=([0-9]*)-([0-9]*)$")


async def _authorized(request: Request) -> Volume:
    return await context(request).volumes.authorize_content(
        request.path_params["volume_id"], request.headers.get("authorization")
    )


def _path(request: Request, name: str = "path") -> str:
    value = request.query_params.get(name)
    if value is None or value == "":
        raise InvalidArgumentError(f"the {name!r} query parameter is required")
    return value


def _int(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    if not _INT_RE.fullmatch(value) or int(value) > 0xFFFFFFFF:
        raise InvalidArgumentError(f"{name} {value!r}: must be an unsigned 32-bit integer")
    return int(value)


def _bool(request: Request, name: str) -> bool:
    value = request.query_params.get(name, "false").lower()
    if value not in ("true", "false", "1", "0"):
        raise InvalidArgumentError(f"{name} {value!r}: must be true or false")
    return value in ("true", "1")


def _owner(request: Request) -> Owner:
    return Owner(uid=_int(request, "uid"), gid=_int(request, "gid"), mode=_int(request, "mode"))


async def get_path(request: Request) -> Response:
    volume = await _authorized(request)
    entry = await context(request).volumes.stat(volume, _path(request))
    return JSONResponse(entry_body(entry))


async def patch_path(request: Request) -> Response:
    volume = await _authorized(request)
    path = _path(request)
    body = await read_body(request, EntryAttrsBody)
    owner = Owner(uid=body.uid, gid=body.gid, mode=body.mode)
    entry = await context(request).volumes.set_attrs(volume, path, owner=owner)
    return JSONResponse(entry_body(entry))


async def delete_path(request: Request) -> Response:
    volume = await _authorized(request)
    await context(request).volumes.remove(volume, _path(request))
    return Response(status_code=204)


async def list_dir(request: Request) -> Response:
    volume = await _authorized(request)
    depth = _int(request, "depth")
    entries = await context(request).volumes.list_dir(
        volume, _path(request), depth=1 if depth is None else depth
    )
    return JSONResponse([entry_body(e) for e in entries])


async def make_dir(request: Request) -> Response:
    volume = await _authorized(request)
    entry = await context(request).volumes.make_dir(
        volume, _path(request), owner=_owner(request), parents=_bool(request, "force")
    )
    return JSONResponse(entry_body(entry), status_code=201)


async def move(request: Request) -> Response:
    """``POST /volumecontent/{id}/move?path=<from>&to=<to>`` → 200 the moved entry."""
    volume = await _authorized(request)
    entry = await context(request).volumes.move(volume, _path(request), _path(request, "to"))
    return JSONResponse(entry_body(entry))


async def put_file(request: Request) -> Response:
    volume = await _authorized(request)
    path = _path(request)
    owner = _owner(request)
    _bool(request, "force")  # accepted; an upload always replaces a file (never a directory)
    metadata = metadata_from_headers(request.headers.items())
    entry = await context(request).volumes.write_file(
        volume, path, request.stream(), owner=owner, metadata=metadata
    )
    return JSONResponse(entry_body(entry), status_code=201)


def _range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """``(start, end_exclusive)``; ``None``: no (usable) range; ``"unsatisfiable"``."""
    if not header:
        return None
    m = _RANGE_RE.fullmatch(header.strip())
    if m is None:
        return None  # not one byte range: RFC 9110 lets us ignore it and send everything
    first, last = m.groups()
    if not first and not last:
        return None
    if not first:
        n = int(last)
        if n == 0:
            return "unsatisfiable"
        return max(0, size - n), size
    start = int(first)
    end = size if not last else min(size, int(last) + 1)
    if start >= size or (last and int(last) < start):
        return "unsatisfiable"
    return start, end


async def get_file(request: Request) -> Response:
    volume = await _authorized(request)
    content = await context(request).volumes.open_file(volume, _path(request))
    wanted = _range(request.headers.get("range"), content.size)
    headers: dict[str, Any] = {"Accept-Ranges": "bytes"}
    if wanted == "unsatisfiable":
        await content.aclose()
        return Response(
            status_code=416, headers={**headers, "Content-Range": f"bytes */{content.size}"}
        )
    status = 200
    start, end = 0, content.size
    if isinstance(wanted, tuple):
        start, end = wanted
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{content.size}"
    headers["Content-Length"] = str(end - start)

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in content.chunks(start, end):
                yield chunk
        finally:
            await content.aclose()

    # The background task closes the file when the body was never iterated (the client
    # went away first); closing twice is harmless.
    return StreamingResponse(
        body(),
        status_code=status,
        headers=headers,
        media_type="application/octet-stream",
        background=BackgroundTask(content.aclose),
    )


ROUTES: Final = [
    Route("/volumecontent/{volume_id}/path", get_path, methods=["GET"]),
    Route("/volumecontent/{volume_id}/path", patch_path, methods=["PATCH"]),
    Route("/volumecontent/{volume_id}/path", delete_path, methods=["DELETE"]),
    Route("/volumecontent/{volume_id}/dir", list_dir, methods=["GET"]),
    Route("/volumecontent/{volume_id}/dir", make_dir, methods=["POST"]),
    Route("/volumecontent/{volume_id}/file", get_file, methods=["GET"]),
    Route("/volumecontent/{volume_id}/file", put_file, methods=["PUT"]),
    Route("/volumecontent/{volume_id}/move", move, methods=["POST"]),
]
