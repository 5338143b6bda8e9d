"""The undo stack of a create: each step that leaves something on the host pushes its undo.

A failure anywhere (or a cancellation) runs the stack in reverse, so exactly what was done
is taken back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from hutch.shared.errors import HutchError

log = logging.getLogger("hutch.node.sandbox")

Undo = Callable[[], Awaitable[None]]


def as_undo(fn: Callable[[], object]) -> Undo:
    """A synchronous step as an undo step."""

    async def run() -> None:
        fn()

    return run


async def unwind(undo: list[Undo], *, sandbox_id: str) -> None:
    """Run the undo stack in reverse; one failing step must not keep the others from running.

    Shielded so that a cancelled create still cleans up what it made.
    """

    async def run_all() -> None:
        for step in reversed(undo):
            try:
                await step()
            except (HutchError, OSError):
                log.exception("rollback of sandbox %s: a step failed", sandbox_id)

    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.shield(run_all())
