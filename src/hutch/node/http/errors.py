"""The node API's one mapping from errors to the wire: status plus a ``WireError`` body.

The status comes from the shared tree's one HTTP table (``shared.errors.http_status``); the
body names the nearest class of the shared tree, so the api's client raises that class
again (``api/nodes/errors.py`` is the other end). Anything outside the tree is an internal
error whose details stay in this node's log.
"""

from __future__ import annotations

import logging

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from hutch.shared import errors as shared_errors
from hutch.shared.errors import (
    HutchError,
    InvalidArgumentError,
    NotFoundError,
    http_status,
)
from hutch.shared.nodewire import WireError

_log = logging.getLogger(__name__)


def _shared_class(exc: HutchError) -> type[HutchError]:
    for cls in type(exc).__mro__:
        if cls.__module__ == shared_errors.__name__ and issubclass(cls, HutchError):
            return cls
    return HutchError  # pragma: no cover - every HutchError has the root in its MRO


def as_hutch_error(exc: BaseException) -> HutchError:
    """Any error as one of the tree (a bad body is 400, an unknown route 404)."""
    if isinstance(exc, HutchError):
        return exc
    if isinstance(exc, ValidationError):
        parts = [
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
            for err in exc.errors()
        ]
        return InvalidArgumentError("; ".join(parts))
    if isinstance(exc, HTTPException):
        if exc.status_code == 404:
            return NotFoundError(f"no such route: {exc.detail}")
        if exc.status_code == 405:
            return InvalidArgumentError(f"method not allowed: {exc.detail}")
        return InvalidArgumentError(str(exc.detail))
    return HutchError(f"internal error: {exc!r}", public_message="internal error on the node")


def wire_error(exc: BaseException) -> WireError:
    """The wire form of ``exc`` (also the last event of a failed stream)."""
    err = as_hutch_error(exc)
    if err is not exc and not isinstance(exc, (ValidationError, HTTPException)):
        _log.error("node API call crashed", exc_info=exc)
    return WireError(
        error=_shared_class(err).__name__,
        code=str(err.code),
        message=err.message,
        public_message=err.public_message,
        retryable=err.retryable,
        error_code=err.error_code,
    )


def error_response(exc: BaseException) -> JSONResponse:
    """The HTTP answer for ``exc``."""
    body = wire_error(exc)
    status = http_status(as_hutch_error(exc))
    return JSONResponse(body.model_dump(), status_code=status)


async def error_handler(request: Request, exc: Exception) -> Response:
    """Starlette's exception handler for every error."""
    return error_response(exc)


EXCEPTION_HANDLERS = {
    HutchError: error_handler,
    ValidationError: error_handler,
    HTTPException: error_handler,
    Exception: error_handler,
}
