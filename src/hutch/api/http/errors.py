"""The one mapping from errors to HTTP: status, E2B's JSON body, and ``Should-Retry``.

E2B's body is ``{"code": <status>, "message": <str>}``, plus ``error_code`` where E2B
sends one (the error's ``error_code``); the SDK's ``Error.from_dict`` requires the first
two, so every error, including unknown routes and crashes, gets this shape.

``Should-Retry`` (e2b-compat §1.5): the SDK retries 429/502/503/504 unless told otherwise,
and any status when told ``true``. Every 5xx carries the error's ``retryable`` as this
header, so a failure after which a sandbox may exist (a failed create whose rollback
failed, or any unexpected crash) says ``false``.
"""

from __future__ import annotations

import logging

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from hutch.shared.errors import HutchError, QuotaExceededError, RateLimitedError, http_status

_log = logging.getLogger(__name__)


def error_response(
    status: int, message: str, *, retryable: bool | None = None, error_code: str | None = None
) -> JSONResponse:
    """E2B's error JSON with ``status``."""
    headers = {}
    if status >= 500:
        headers["Should-Retry"] = "true" if retryable else "false"
    body: dict[str, object] = {"code": status, "message": message}
    if error_code is not None:
        body["error_code"] = error_code
    return JSONResponse(body, status_code=status, headers=headers)


def validation_message(exc: ValidationError) -> str:
    """A pydantic error as one line naming the field (``metadata.key: ...``)."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def error_body(request: Request, exc: BaseException) -> tuple[int, str, bool | None]:
    """Status, message and retryability of any error, as the handlers below answer it
    (also used for the error event that ends a streamed response)."""
    if isinstance(exc, HutchError):
        status = http_status(exc)
        if status >= 500:
            _log.error("%s %s failed: %s", request.method, request.url.path, exc.message)
        return status, exc.public_message, exc.retryable
    if isinstance(exc, ValidationError):
        return 400, validation_message(exc), None
    if isinstance(exc, HTTPException):
        return exc.status_code, exc.detail, False
    _log.error("%s %s crashed", request.method, request.url.path, exc_info=exc)
    return 500, "Internal server error", False


async def error_handler(request: Request, exc: Exception) -> Response:
    """Any error as E2B's JSON: a domain error its status and public message, a body or
    query without the wire shape 400 naming the field, Starlette's own (unknown route 404,
    wrong method 405) theirs, a bug 500 logged with its traceback and never retried."""
    status, message, retryable = error_body(request, exc)
    code = exc.error_code if isinstance(exc, HutchError) else None
    response = error_response(status, message, retryable=retryable, error_code=code)
    if isinstance(exc, RateLimitedError):
        # Whole seconds (RFC 9110 delay-seconds), which the SDKs wait before retrying.
        response.headers["Retry-After"] = str(exc.retry_after_s)
    if isinstance(exc, QuotaExceededError):
        # The SDK retries a 429 without this header; a quota does not clear in seconds.
        response.headers["Should-Retry"] = "false"
    return response


EXCEPTION_HANDLERS = {
    HutchError: error_handler,
    ValidationError: error_handler,
    HTTPException: error_handler,
    Exception: error_handler,
}
