"""The one error tree of hutch.

Domain code raises these and nothing else; transports map them to the wire in exactly one
place each (HTTP status: :func:`http_status` below; Connect codes: ``envd/rpc/errors.py``).
``message`` is for logs; ``public_message`` is what a client sees.

* HutchError                       internal, 500
  x InvalidArgumentError           invalid_argument, 400
    x ImageError                   invalid_argument, 400 (an image that cannot be imported)
  x UnauthenticatedError           unauthenticated, 401
  x PermissionDeniedError          permission_denied, 403
  x NotFoundError                  not_found, 404
  x AlreadyExistsError             already_exists, 409
  x ConflictError                  aborted, 409 (the resource is in the wrong state)
  x ResourceExhaustedError         resource_exhausted, 429 (too many of something)
    x QuotaExceededError           resource_exhausted, 429 (a team's quota; not retried)
    x RateLimitedError             resource_exhausted, 429 (a key's rate; Retry-After)
    x InsufficientStorageError     resource_exhausted, 507 (out of disk space or quota)
  x DeadlineExceededError          deadline_exceeded, 504
  x UnavailableError               unavailable, 503 (retryable)
    x ArtifactUnavailableError     unavailable, 503 (a node lacks a template's artifact
                                   and could not fetch it: placement tries the next node)
  x UnimplementedError             unimplemented, 501 (an E2B feature this server lacks)
    x GoneError                    unimplemented, 410 (an E2B feature E2B itself retired)
"""

from __future__ import annotations

import errno
from enum import StrEnum
from typing import ClassVar


class ErrorCode(StrEnum):
    """The shared vocabulary: Connect's error codes (https://connectrpc.com/docs/protocol)."""

    CANCELED = "canceled"
    UNKNOWN = "unknown"
    INVALID_ARGUMENT = "invalid_argument"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    NOT_FOUND = "not_found"
    ALREADY_EXISTS = "already_exists"
    PERMISSION_DENIED = "permission_denied"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    FAILED_PRECONDITION = "failed_precondition"
    ABORTED = "aborted"
    OUT_OF_RANGE = "out_of_range"
    UNIMPLEMENTED = "unimplemented"
    INTERNAL = "internal"
    UNAVAILABLE = "unavailable"
    DATA_LOSS = "data_loss"
    UNAUTHENTICATED = "unauthenticated"


class HutchError(Exception):
    """Root of every error hutch raises on purpose."""

    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL
    #: Overrides the code's usual HTTP status where HTTP has a more precise one (507).
    http_status_override: ClassVar[int | None] = None
    retryable: ClassVar[bool] = False

    def __init__(
        self, message: str, *, public_message: str | None = None, error_code: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.public_message = public_message if public_message is not None else message
        #: E2B's machine-readable ``error_code`` (e.g. ``sandbox_capacity_unavailable``),
        #: sent beside ``code`` and ``message`` where E2B's API sends one.
        self.error_code = error_code


class InvalidArgumentError(HutchError):
    code = ErrorCode.INVALID_ARGUMENT


class ImageError(InvalidArgumentError):
    """An OCI image that cannot become a template: corrupt, unsupported or unsafe."""


class UnauthenticatedError(HutchError):
    code = ErrorCode.UNAUTHENTICATED


class PermissionDeniedError(HutchError):
    code = ErrorCode.PERMISSION_DENIED


class NotFoundError(HutchError):
    code = ErrorCode.NOT_FOUND


class AlreadyExistsError(HutchError):
    code = ErrorCode.ALREADY_EXISTS


class ConflictError(HutchError):
    code = ErrorCode.ABORTED


class ResourceExhaustedError(HutchError):
    code = ErrorCode.RESOURCE_EXHAUSTED


class QuotaExceededError(ResourceExhaustedError):
    """A team's quota (ADR 0015) would be exceeded: 429 with ``Should-Retry: false`` (a
    retry a moment later would fail the same way)."""


class RateLimitedError(ResourceExhaustedError):
    """Too many requests with one API key: 429 with ``Retry-After: retry_after_s``."""

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: int = 1,
        public_message: str | None = None,
        error_code: str | None = None,
    ) -> None:
        # The base class's keywords too, so that every class of the tree is built the same
        # way where errors are rebuilt from a wire (the node API's client).
        super().__init__(message, public_message=public_message, error_code=error_code)
        self.retry_after_s = retry_after_s


class InsufficientStorageError(ResourceExhaustedError):
    http_status_override = 507


class DeadlineExceededError(HutchError):
    code = ErrorCode.DEADLINE_EXCEEDED


class UnavailableError(HutchError):
    code = ErrorCode.UNAVAILABLE
    retryable = True


class ArtifactUnavailableError(UnavailableError):
    """The node does not hold the template's (or snapshot's) artifact and could not fetch
    it from a peer (none named, none answered, a digest did not match): the create goes to
    another node (ADR 0029); when no node can serve it, the api answers 503 with
    ``error_code`` ``template_artifact_unavailable``."""


class UnimplementedError(HutchError):
    """An E2B route or feature this server does not offer (501, never retried); the
    message says what instead (docs/api.md's list of what is not served)."""

    code = ErrorCode.UNIMPLEMENTED


class GoneError(UnimplementedError):
    """An E2B route E2B itself deprecated and answers 410 (``POST /access-tokens``)."""

    http_status_override = 410


_HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.CANCELED: 499,
    ErrorCode.UNKNOWN: 500,
    ErrorCode.INVALID_ARGUMENT: 400,
    ErrorCode.DEADLINE_EXCEEDED: 504,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.ALREADY_EXISTS: 409,
    ErrorCode.PERMISSION_DENIED: 403,
    ErrorCode.RESOURCE_EXHAUSTED: 429,
    ErrorCode.FAILED_PRECONDITION: 400,
    ErrorCode.ABORTED: 409,
    ErrorCode.OUT_OF_RANGE: 400,
    ErrorCode.UNIMPLEMENTED: 501,
    ErrorCode.INTERNAL: 500,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.DATA_LOSS: 500,
    ErrorCode.UNAUTHENTICATED: 401,
}


def http_status(exc: HutchError) -> int:
    """The HTTP status for ``exc``: the single HTTP mapping of the error tree."""
    if exc.http_status_override is not None:
        return exc.http_status_override
    return _HTTP_STATUS[exc.code]


_ERRNO_TO_ERROR: dict[int, type[HutchError]] = {
    errno.ENOENT: NotFoundError,
    errno.EEXIST: AlreadyExistsError,
    errno.ENOTEMPTY: ConflictError,
    errno.EACCES: PermissionDeniedError,
    errno.EPERM: PermissionDeniedError,
    errno.EROFS: PermissionDeniedError,
    errno.ENOSPC: InsufficientStorageError,
    errno.EDQUOT: InsufficientStorageError,
    errno.EFBIG: InsufficientStorageError,
    errno.ENOTDIR: InvalidArgumentError,
    errno.EISDIR: InvalidArgumentError,
    errno.EINVAL: InvalidArgumentError,
    errno.ENAMETOOLONG: InvalidArgumentError,
    errno.ELOOP: InvalidArgumentError,
    errno.EXDEV: InvalidArgumentError,
}


def from_os_error(exc: OSError, what: str) -> HutchError:
    """Translate an ``OSError`` about ``what`` (usually a path) into the tree.

    Adapters call this once, at their seam: ``raise from_os_error(exc, path) from exc``.
    """
    cls = _ERRNO_TO_ERROR.get(exc.errno or 0, HutchError)
    reason = exc.strerror or str(exc)
    return cls(f"{what}: {reason}")
