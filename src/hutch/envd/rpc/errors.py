"""The error tree mapped to Connect codes: the single Connect mapping of envd.

An interceptor on both services translates ``HutchError`` into ``ConnectError`` (with the
public message) for unary and streaming calls alike, so handlers raise domain errors only.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from connectrpc.code import Code
from connectrpc.errors import ConnectError

from hutch.shared.errors import HutchError

log = logging.getLogger("hutch.envd")


def to_connect_error(exc: HutchError) -> ConnectError:
    """The Connect error a client sees for ``exc``."""
    if exc.code.value == "internal":
        log.error("internal error: %s", exc.message)
    return ConnectError(Code(exc.code.value), exc.public_message)


class ErrorInterceptor:
    """Translates domain errors at the Connect seam, for every kind of RPC."""

    async def intercept_unary(
        self, call_next: Callable[[Any, Any], Awaitable[Any]], request: Any, ctx: Any, /
    ) -> Any:
        try:
            return await call_next(request, ctx)
        except HutchError as exc:
            raise to_connect_error(exc) from exc

    async def intercept_server_stream(
        self, call_next: Callable[[Any, Any], AsyncIterator[Any]], request: Any, ctx: Any, /
    ) -> AsyncIterator[Any]:
        try:
            async for message in call_next(request, ctx):
                yield message
        except HutchError as exc:
            raise to_connect_error(exc) from exc

    # Client streams end in one awaited response, like unary calls; bidi streams yield
    # messages, like server streams: the same translation serves each pair.
    intercept_client_stream = intercept_unary
    intercept_bidi_stream = intercept_server_stream
