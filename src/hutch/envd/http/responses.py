"""envd's HTTP error body: ``{"code": <status>, "message": ...}`` (E2B's envd ``Error``)."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from hutch.shared.errors import HutchError, http_status

log = logging.getLogger("hutch.envd")


def error_response(status: int, message: str) -> JSONResponse:
    """A JSON error response in envd's shape."""
    return JSONResponse({"code": status, "message": message}, status_code=status)


async def hutch_error_handler(request: Request, exc: Exception) -> Response:
    """Map the error tree to HTTP (the mapping itself is ``shared.errors.http_status``)."""
    assert isinstance(exc, HutchError)
    status = http_status(exc)
    if status >= 500:
        log.error("%s %s: %s", request.method, request.url.path, exc.message)
    return error_response(status, exc.public_message)


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 and friends, in the same JSON shape."""
    assert isinstance(exc, HTTPException)
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code)
    return error_response(exc.status_code, str(exc.detail))


async def unexpected_error_handler(request: Request, exc: Exception) -> Response:
    """Anything unforeseen: logged with its traceback, answered without it."""
    log.exception("%s %s failed", request.method, request.url.path)
    return error_response(500, f"internal error: {type(exc).__name__}")


EXCEPTION_HANDLERS = {
    HutchError: hutch_error_handler,
    HTTPException: http_exception_handler,
    Exception: unexpected_error_handler,
}
