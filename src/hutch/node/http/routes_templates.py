"""``/v1/templates/...``, ``/v1/build-files/...``, ``/v1/builds``: template work on this node.

Long work answers as an NDJSON stream (``shared.nodewire.StreamEvent``): the status is sent
at once (200 once the body is valid), events follow as they happen, and the last line is
the outcome, an ``error`` event carrying the same ``WireError`` a plain answer would have.
The work runs as a task of its own: a caller that goes away does not stop an import or a
build half-way (its files would be left half-made).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from hutch.node.http.errors import wire_error
from hutch.node.http.routes_sandboxes import answer, body, service
from hutch.node.templates.build import BuildStepError
from hutch.node.templates.image import ImageTemplateOptions
from hutch.shared import nodewire as wire

#: An import reports each stage at most this often (and every stage's first and last):
#: it calls back per read of a layer, thousands of times.
_PROGRESS_EVERY_S = 0.1
#: Streamed work still running after its caller left (kept referenced until it ends).
_RUNNING: set[asyncio.Task[wire.StreamEvent]] = set()

Emit = Callable[[wire.StreamEvent], None]


async def _events(work: Callable[[Emit], Awaitable[wire.StreamEvent]]) -> AsyncIterator[bytes]:
    """Run ``work`` as a task; its emitted events as lines, then its outcome's line."""
    queue: asyncio.Queue[wire.StreamEvent] = asyncio.Queue()
    task = asyncio.create_task(work(queue.put_nowait), name="hutch-node-stream")
    _RUNNING.add(task)
    task.add_done_callback(_RUNNING.discard)
    while not task.done():
        getter = asyncio.ensure_future(queue.get())
        try:
            await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            getter.cancel()
        if getter.done() and not getter.cancelled():
            yield wire.event_line(getter.result())
    while not queue.empty():
        yield wire.event_line(queue.get_nowait())
    try:
        outcome = task.result()
    except Exception as exc:
        outcome = wire.ErrorEvent(error=wire_error(exc))
    yield wire.event_line(outcome)


def _stream(events: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(events, media_type=wire.NDJSON)


async def import_image(request: Request) -> Response:
    """``POST /v1/templates/import`` → NDJSON: ``progress`` events, then ``result``."""
    args = await body(request, wire.ImportImage)
    templates = service(request).templates
    options = ImageTemplateOptions(
        name=args.name, inject_envd=args.inject_envd,
        envd_path=Path(args.envd_path) if args.envd_path else None,
        cpu_count=args.cpu_count, memory_mb=args.memory_mb, disk_mb=args.disk_mb,
        start_cmd=args.start_cmd, ready_cmd=args.ready_cmd,
    )  # fmt: skip
    loop = asyncio.get_running_loop()

    async def work(emit: Emit) -> wire.StreamEvent:
        posted: dict[str, float] = {}

        def progress(stage: str, done: int, total: int) -> None:  # from the worker thread
            now = time.monotonic()
            last = posted.get(stage)
            if last is not None and done < total and now - last < _PROGRESS_EVERY_S:
                return
            posted[stage] = now
            event = wire.ProgressEvent(stage=stage, done=done, total=total)
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(emit, event)

        result = await templates.import_image(args.source, options, progress=progress)
        return wire.ImportedEvent(
            name=args.name, fingerprint=result.fingerprint, cache_hit=result.cache_hit,
            envd_sha256=result.envd_sha256,
        )  # fmt: skip

    return _stream(_events(work))


async def delete_template(request: Request) -> Response:
    """``DELETE /v1/templates/{name}`` → 204 (idempotent)."""
    await service(request).templates.delete(str(request.path_params["name"]))
    return Response(status_code=204)


async def build_files(request: Request) -> Response:
    """``GET /v1/build-files/{hash}`` → ``BuildFiles``."""
    present = service(request).templates.has_files(str(request.path_params["files_hash"]))
    return answer(wire.BuildFiles(present=present))


async def upload_build_files(request: Request) -> Response:
    """``PUT /v1/build-files/{hash}`` (the archive, streamed) → 204 once it is kept."""
    await service(request).templates.store_files(
        str(request.path_params["files_hash"]), request.stream()
    )
    return Response(status_code=204)


async def run_build(request: Request) -> Response:
    """``POST /v1/builds`` → NDJSON: ``log`` events, then ``done`` or ``failed``."""
    args = await body(request, wire.RunBuild)
    templates = service(request).templates

    async def work(emit: Emit) -> wire.StreamEvent:
        def log(level: str, message: str, step: str | None = None) -> None:
            emit(wire.BuildLogEvent(level=level, message=message, step=step))

        try:
            await templates.run_build(
                args.name, args.start, cpu_count=args.cpu_count, memory_mb=args.memory_mb,
                log=log, build_id=args.build_id,
            )  # fmt: skip
        except BuildStepError as exc:
            return wire.BuildFailedEvent(message=exc.message, step=exc.step)
        return wire.BuildDoneEvent()

    return _stream(_events(work))


ROUTES = [
    Route(f"{wire.PREFIX}/templates/import", import_image, methods=["POST"]),
    Route(f"{wire.PREFIX}/templates/{{name}}", delete_template, methods=["DELETE"]),
    Route(f"{wire.PREFIX}/build-files/{{files_hash}}", build_files, methods=["GET"]),
    Route(f"{wire.PREFIX}/build-files/{{files_hash}}", upload_build_files, methods=["PUT"]),
    Route(f"{wire.PREFIX}/builds", run_build, methods=["POST"]),
]
