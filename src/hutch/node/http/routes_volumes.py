"""``/v1/volumes/...``: the node's local volumes (ADR 0034), for the api.

A local volume's ext4 image lives on the node that created it; the api creates, deletes
and sizes it here, and forwards the volume content API (``/volumecontent/...``) to these
routes. Paths arrive as the content API's and are normalised again here (a node trusts no
caller's path). Uploads stream from the request body into the backend; downloads stream
from the backend, ``?start=&end=`` (end exclusive) asking for a part, the whole file's size
in ``X-Hutch-File-Size``. Behind the cluster token, as every node route.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Final

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from hutch.node.http.routes_sandboxes import answer, body, service
from hutch.shared import nodewire as wire
from hutch.shared.errors import InvalidArgumentError
from hutch.shared.ids import is_volume_id
from hutch.volumes.base import EntryStat, Owner, VolumeBackend, normalize_path


def entry_out(entry: EntryStat) -> wire.VolumeEntry:
    """An entry on the wire."""
    return wire.VolumeEntry(
        name=entry.name, type=entry.type, path=entry.path, size=entry.size, mode=entry.mode,
        uid=entry.uid, gid=entry.gid, atime=entry.atime.timestamp(),
        mtime=entry.mtime.timestamp(), ctime=entry.ctime.timestamp(), target=entry.target,
        metadata=dict(entry.metadata),
    )  # fmt: skip


def _volumes(request: Request) -> VolumeBackend:
    return service(request).local_volumes()


def _vid(request: Request) -> str:
    vid = str(request.path_params["volume_id"])
    if not is_volume_id(vid):
        raise InvalidArgumentError(f"{vid!r} is not a volume id")
    return vid


def _path(request: Request, name: str = "path") -> str:
    return normalize_path(request.query_params.get(name, ""))


def _int(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    if not value.isdigit():
        raise InvalidArgumentError(f"{name} {value!r}: must be a non-negative integer")
    return int(value)


def _owner(request: Request) -> Owner:
    return Owner(uid=_int(request, "uid"), gid=_int(request, "gid"), mode=_int(request, "mode"))


async def capacity(request: Request) -> Response:
    """``GET /v1/volumes`` → ``VolumeCapacity``."""
    return answer(wire.VolumeCapacity(capacity_bytes=await _volumes(request).capacity_bytes()))


async def create(request: Request) -> Response:
    """``POST /v1/volumes`` → 201 ``VolumeUsage`` of the new, empty volume."""
    args = await body(request, wire.CreateVolume)
    if not is_volume_id(args.volume_id):
        raise InvalidArgumentError(f"{args.volume_id!r} is not a volume id")
    volumes = _volumes(request)
    await volumes.create(args.volume_id, quota_bytes=args.quota_bytes)
    used = await volumes.usage(args.volume_id)
    return answer(
        wire.VolumeUsage(used_bytes=used.used_bytes, total_bytes=used.total_bytes), status=201
    )


async def delete(request: Request) -> Response:
    """``DELETE /v1/volumes/{id}`` → 204 (also when there was none)."""
    vid = _vid(request)
    await _volumes(request).delete(vid)
    return Response(status_code=204)


async def usage(request: Request) -> Response:
    """``GET /v1/volumes/{id}/usage`` → ``VolumeUsage``."""
    vid = _vid(request)
    used = await _volumes(request).usage(vid)
    return answer(wire.VolumeUsage(used_bytes=used.used_bytes, total_bytes=used.total_bytes))


async def stat(request: Request) -> Response:
    """``GET /v1/volumes/{id}/entry?path=`` → ``VolumeEntry``."""
    vid, rel = _vid(request), _path(request)
    return answer(entry_out(await _volumes(request).stat(vid, rel)))


async def set_attrs(request: Request) -> Response:
    """``PATCH /v1/volumes/{id}/entry?path=&uid=&gid=&mode=`` → ``VolumeEntry``."""
    vid, rel, owner = _vid(request), _path(request), _owner(request)
    entry = await _volumes(request).set_attrs(vid, rel, owner=owner)
    return answer(entry_out(entry))


async def remove(request: Request) -> Response:
    """``DELETE /v1/volumes/{id}/entry?path=`` → 204."""
    vid, rel = _vid(request), _path(request)
    await _volumes(request).remove(vid, rel)
    return Response(status_code=204)


async def list_dir(request: Request) -> Response:
    """``GET /v1/volumes/{id}/dir?path=&depth=`` → ``VolumeEntries``."""
    vid, rel, depth = _vid(request), _path(request), _int(request, "depth")
    entries = await _volumes(request).list_dir(vid, rel, depth=1 if depth is None else depth)
    return answer(wire.VolumeEntries(entries=[entry_out(e) for e in entries]))


async def make_dir(request: Request) -> Response:
    """``POST /v1/volumes/{id}/dir?path=&parents=&uid=&gid=&mode=`` → 201 ``VolumeEntry``."""
    vid, rel, owner = _vid(request), _path(request), _owner(request)
    parents = request.query_params.get("parents") == "true"
    entry = await _volumes(request).make_dir(vid, rel, owner=owner, parents=parents)
    return answer(entry_out(entry), status=201)


async def move(request: Request) -> Response:
    """``POST /v1/volumes/{id}/move`` (``MoveVolumeEntry``) → ``VolumeEntry``."""
    vid, args = _vid(request), await body(request, wire.MoveVolumeEntry)
    src, dst = normalize_path(args.src), normalize_path(args.dst)
    entry = await _volumes(request).move(vid, src, dst)
    return answer(entry_out(entry))


def _metadata(request: Request) -> dict[str, str]:
    raw = request.headers.get(wire.VOLUME_METADATA_HEADER)
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError as exc:
        raise InvalidArgumentError(f"{wire.VOLUME_METADATA_HEADER}: not JSON") from exc
    if not isinstance(parsed, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in parsed.items()
    ):
        raise InvalidArgumentError(f"{wire.VOLUME_METADATA_HEADER}: want an object of strings")
    return parsed


async def put_file(request: Request) -> Response:
    """``PUT /v1/volumes/{id}/file?path=&uid=&gid=&mode=``, the body streamed into the
    file → 201 ``VolumeEntry``."""
    vid, rel, owner, metadata = _vid(request), _path(request), _owner(request), _metadata(request)
    entry = await _volumes(request).write_file(
        vid, rel, request.stream(), owner=owner, metadata=metadata
    )
    return answer(entry_out(entry), status=201)


async def get_file(request: Request) -> Response:
    """``GET /v1/volumes/{id}/file?path=[&start=&end=]`` → the bytes, streamed."""
    vid, rel = _vid(request), _path(request)
    start, end = _int(request, "start") or 0, _int(request, "end")
    content = await _volumes(request).open_file(vid, rel)
    end = content.size if end is None else min(end, content.size)
    if start > end:
        await content.aclose()
        raise InvalidArgumentError(f"range {start}-{end}: start after end")

    async def chunks() -> AsyncIterator[bytes]:
        try:
            async for chunk in content.chunks(start, end):
                yield chunk
        finally:
            await content.aclose()

    return StreamingResponse(
        chunks(),
        media_type="application/octet-stream",
        headers={
            "Content-Length": str(end - start),
            wire.VOLUME_FILE_SIZE_HEADER: str(content.size),
        },
        background=BackgroundTask(content.aclose),  # the client went away before the body
    )


_V: Final = f"{wire.PREFIX}/volumes"
ROUTES: Final = [
    Route(_V, capacity, methods=["GET"]),
    Route(_V, create, methods=["POST"]),
    Route(f"{_V}/{{volume_id}}", delete, methods=["DELETE"]),
    Route(f"{_V}/{{volume_id}}/usage", usage, methods=["GET"]),
    Route(f"{_V}/{{volume_id}}/entry", stat, methods=["GET"]),
    Route(f"{_V}/{{volume_id}}/entry", set_attrs, methods=["PATCH"]),
    Route(f"{_V}/{{volume_id}}/entry", remove, methods=["DELETE"]),
    Route(f"{_V}/{{volume_id}}/dir", list_dir, methods=["GET"]),
    Route(f"{_V}/{{volume_id}}/dir", make_dir, methods=["POST"]),
    Route(f"{_V}/{{volume_id}}/move", move, methods=["POST"]),
    Route(f"{_V}/{{volume_id}}/file", put_file, methods=["PUT"]),
    Route(f"{_V}/{{volume_id}}/file", get_file, methods=["GET"]),
]
