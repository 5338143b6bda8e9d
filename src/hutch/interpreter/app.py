"""HTTP transport: the E2B code-interpreter routes on Starlette.

Requests are checked and turned into calls on ``Contexts`` and ``execution.run``;
``InterpreterError`` becomes a plain-text response with its status here, in one place.
``/execute`` streams newline-delimited JSON and cancels the execution (which interrupts
the cell) when the client disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from hutch.interpreter import execution, languages, wire
from hutch.interpreter.contexts import Contexts
from hutch.interpreter.errors import BadRequest, InterpreterError
from hutch.interpreter.languages import Languages
from hutch.interpreter.settings import Settings

log = logging.getLogger(__name__)


class ExecutionStream(Response):
    """NDJSON items, ``end_of_execution`` last; a disconnect cancels the producer."""

    media_type = "application/x-ndjson"

    def __init__(self, items: AsyncIterator[dict[str, Any]]) -> None:
        self.status_code = 200
        self.background = None
        self.raw_headers = [(b"content-type", self.media_type.encode())]
        self.items = items

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})

        async def produce() -> None:
            async for item in self.items:
                await send(
                    {"type": "http.response.body", "body": wire.encode(item), "more_body": True}
                )
            await send({"type": "http.response.body", "body": wire.encode(wire.END_OF_EXECUTION)})

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        producer = asyncio.create_task(produce())
        watcher = asyncio.create_task(watch())
        try:
            await asyncio.wait({producer, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
            if not producer.done():
                log.info("client left during an execution: interrupting it")
                producer.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError, Exception):
                await producer
            with contextlib.suppress(Exception):
                await self.items.aclose()  # type: ignore[attr-defined]


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as e:
        raise BadRequest(f"the body is not JSON: {e}") from e
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _optional_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"{key} must be a string")
    return value or None


def build_app(settings: Settings, langs: Languages | None = None) -> Starlette:
    langs = langs or Languages(settings.python)
    contexts = Contexts(settings, langs)

    async def health(_: Request) -> Response:
        return JSONResponse("OK")

    async def execute(request: Request) -> Response:
        body = await _json_body(request)
        code = body.get("code")
        if not isinstance(code, str):
            raise BadRequest("code must be a string")
        context_id = _optional_str(body, "context_id")
        language = _optional_str(body, "language")
        if context_id and language:
            raise BadRequest("Only one of context_id or language can be provided")
        env_vars = languages.check_env_vars(body.get("env_vars"))
        if context_id:
            context = contexts.get(context_id)
        else:
            context = await contexts.default(languages.normalize(language))
        token = request.headers.get("x-access-token")
        return ExecutionStream(execution.run(context, code, env_vars, token, settings))

    async def create_context(request: Request) -> Response:
        body = await _json_body(request)
        language = languages.normalize(_optional_str(body, "language"))
        context = await contexts.create(language, _optional_str(body, "cwd"))
        return JSONResponse(context.to_json())

    async def list_contexts(_: Request) -> Response:
        return JSONResponse([c.to_json() for c in contexts.list()])

    async def restart_context(request: Request) -> Response:
        await contexts.restart(request.path_params["context_id"])
        return Response(status_code=204)

    async def remove_context(request: Request) -> Response:
        await contexts.remove(request.path_params["context_id"])
        return Response(status_code=204)

    async def on_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, InterpreterError)
        return PlainTextResponse(str(exc), status_code=exc.status)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        log.info("kernels installed: %s", ", ".join(langs.installed))
        await contexts.start()
        try:
            yield
        finally:
            await contexts.close()

    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/execute", execute, methods=["POST"]),
            Route("/contexts", create_context, methods=["POST"]),
            Route("/contexts", list_contexts, methods=["GET"]),
            Route("/contexts/{context_id}/restart", restart_context, methods=["POST"]),
            Route("/contexts/{context_id}", remove_context, methods=["DELETE"]),
        ],
        middleware=[
            Middleware(
                CORSMiddleware, allow_origins=["*"], allow_methods=["*"], allow_headers=["*"]
            )
        ],
        exception_handlers={InterpreterError: on_error},
        lifespan=lifespan,
    )
    app.state.contexts = contexts
    return app
