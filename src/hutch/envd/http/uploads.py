"""Multipart upload routes (``/files/upload/*``): parse the request, shape the answer.

The sessions themselves live in ``filesystem/uploads.py``.
"""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hutch.envd.context import Envd
from hutch.envd.http.files import decoded_body, request_metadata, written_json
from hutch.shared.errors import InvalidArgumentError

_MAX_INIT_BODY = 64 * 1024


def _int_field(body: dict, name: str) -> int:
    value = body.get(name)
    # bool is an int in Python; JSON true is not a size.
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgumentError(f"{name} must be an integer")
    return value


def routes(envd: Envd) -> list[Route]:
    """The multipart upload routes of ``envd``."""
    uploads = envd.uploads

    async def init(request: Request) -> Response:
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > _MAX_INIT_BODY:
                raise InvalidArgumentError("request body too large")
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise InvalidArgumentError(f"request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise InvalidArgumentError("request body must be a JSON object")
        path = body.get("path")
        if not isinstance(path, str) or not path:
            raise InvalidArgumentError("path must be a non-empty string")
        username = body.get("username")
        if username is not None and not isinstance(username, str):
            raise InvalidArgumentError("username must be a string")
        total_size = _int_field(body, "totalSize")
        part_size = _int_field(body, "partSize")
        user = envd.user(username or request.query_params.get("username") or None)
        metadata = request_metadata(request)
        session = await uploads.create(
            path=envd.path(path, user),
            user=user,
            total_size=total_size,
            part_size=part_size,
            metadata=metadata,
        )
        return JSONResponse({"uploadId": session.upload_id, "numParts": session.num_parts})

    async def put_part(request: Request) -> Response:
        upload_id = request.path_params["upload_id"]
        raw_part = request.query_params.get("part")
        if raw_part is None or not raw_part.isdigit():
            uploads.get(upload_id)  # an unknown or malformed id is the clearer error
            raise InvalidArgumentError("part must be a non-negative integer query parameter")
        length: int | None = None
        encoding = request.headers.get("content-encoding", "").strip().lower()
        declared = request.headers.get("content-length")
        if declared is not None and encoding in ("", "identity"):
            if not declared.isdigit():
                raise InvalidArgumentError("invalid Content-Length")
            length = int(declared)
        with envd.transfers.transfer():
            size = await uploads.write_part(
                upload_id, part=int(raw_part), body=decoded_body(request), length=length
            )
        return JSONResponse({"part": int(raw_part), "size": size})

    async def complete(request: Request) -> Response:
        written = await uploads.complete(request.path_params["upload_id"])
        return written_json([written])

    async def abort(request: Request) -> Response:
        await uploads.abort(request.path_params["upload_id"])
        return Response(status_code=204)

    return [
        Route("/files/upload/init", init, methods=["POST"]),
        Route("/files/upload/{upload_id}", put_part, methods=["PUT"]),
        Route("/files/upload/{upload_id}", abort, methods=["DELETE"]),
        Route("/files/upload/{upload_id}/complete", complete, methods=["POST"]),
    ]
