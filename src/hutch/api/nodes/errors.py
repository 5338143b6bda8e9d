"""The client side's one mapping from the node API to the error tree.

A node answers every failure with a ``WireError`` (``shared.nodewire``): the class it names
is raised again here, with the node's message, public message and retryability, so the
api's services see exactly what an in-process node would have raised. A class this side
does not know falls back to the class of its code. Transport failures (refused, reset,
timed out) become :class:`~hutch.shared.errors.UnavailableError`: retryable, because every
``NodeClient`` call is safe to retry.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx
from pydantic import ValidationError

from hutch.shared import errors as shared
from hutch.shared.errors import ErrorCode, HutchError, UnavailableError
from hutch.shared.nodewire import WireError

#: Every class of the shared tree, by name.
_CLASSES: dict[str, type[HutchError]] = {
    name: cls
    for name, cls in vars(shared).items()
    if isinstance(cls, type) and issubclass(cls, HutchError)
}
#: The most general class of each code, for a class name this side does not know.
_BY_CODE: dict[str, type[HutchError]] = {}
for _cls in sorted(_CLASSES.values(), key=lambda c: len(c.__mro__), reverse=True):
    _BY_CODE[str(_cls.code)] = _cls


def from_wire(err: WireError) -> HutchError:
    """The exception ``err`` describes."""
    cls = _CLASSES.get(err.error) or _BY_CODE.get(err.code, HutchError)
    exc = cls(err.message, public_message=err.public_message, error_code=err.error_code)
    if err.retryable != cls.retryable:
        exc.retryable = err.retryable  # type: ignore[misc]  # data on the error (Temporal)
    return exc


def from_response(response: httpx.Response, *, what: str) -> HutchError:
    """The error of a failed answer (``response`` read)."""
    try:
        return from_wire(WireError.model_validate_json(response.content))
    except ValidationError:
        code = ErrorCode.UNAVAILABLE if response.status_code >= 500 else ErrorCode.INTERNAL
        cls = _BY_CODE[str(code)]
        return cls(f"{what}: node answered {response.status_code} without an error body")


@contextlib.contextmanager
def transport_errors(what: str) -> Iterator[None]:
    """Translate httpx's transport failures inside the block into ``UnavailableError``."""
    try:
        yield
    except httpx.TransportError as exc:
        raise UnavailableError(
            f"{what}: node unreachable: {type(exc).__name__}: {exc}",
            public_message="the sandbox's node cannot be reached; try again",
        ) from exc
