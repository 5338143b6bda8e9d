"""How a job worker (builds, ADR 0024; imports, ADR 0030) hears that a job was queued.

A worker wakes on its own api's submit, on PostgreSQL ``NOTIFY`` from another api through
``Listen``, and on its poll. ``listening`` subscribes for the body of an ``async with``;
a subscription that fails is logged and leaves the poll, which is the fallback anyway.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

_log = logging.getLogger(__name__)

#: Subscribes ``callback`` to "a job was queued" for the body of the ``async with``.
Listen = Callable[[Callable[[], None]], AbstractAsyncContextManager[None]]


@contextlib.asynccontextmanager
async def listening(
    listen: Listen | None, wake: Callable[[], None], *, worker: str, poll_s: float
) -> AsyncIterator[None]:
    """``listen(wake)`` for the body; without ``listen``, or when it fails, nothing."""
    if listen is None:
        yield
        return
    try:
        cm = listen(wake)
        await cm.__aenter__()
    except Exception as exc:  # the poll still works: it is the fallback
        _log.warning("%s: LISTEN failed (%s); polling every %s s", worker, exc, poll_s)
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            await cm.__aexit__(None, None, None)
