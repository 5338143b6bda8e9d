"""Metadata PATCH: merge into the store and the running sandbox, both or neither (ADR 0005).

Under the sandbox's lock (``locks.py``; across api processes on PostgreSQL), end to end:

1. the store merges the patch under its row lock, and only while the sandbox is
   ``running`` (creating, pausing, paused, resuming, killing: 409 naming the state;
   killed or another team's: 404);
2. the node receives the *whole* resulting map (idempotent, so a retry is harmless);
3. if step 2 fails, the store gets the inverse patch (each patched key back to its old
   value, or removed) and the error goes to the client: neither side changed.

The store is the source of truth: should the process die between 1 and 3, startup
reconciliation gives the node the store's map again. The critical section is shielded
from cancellation, so a client that hangs up mid-patch cannot leave the two apart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from hutch.api.models import SandboxState
from hutch.api.service.locks import SandboxLockFamily
from hutch.api.service.ports import NodeClient
from hutch.api.service.validation import check_metadata, check_metadata_patch
from hutch.api.store.base import SandboxStore
from hutch.shared.errors import NotFoundError
from hutch.shared.ids import SandboxID, TeamID

#: A test seam: awaited between the store step and the node step of every patch (the
#: tests inject faults and delays here; production leaves it ``None``).
BetweenSteps = Callable[[SandboxID], Awaitable[None]]

_PATCHABLE = frozenset({SandboxState.RUNNING})


def _not_found(sandbox_id: str) -> NotFoundError:
    return NotFoundError(
        f"sandbox {sandbox_id} not found", public_message=f"Sandbox {sandbox_id} not found"
    )


class MetadataService:
    """``PATCH /sandboxes/{id}/metadata``."""

    def __init__(
        self,
        *,
        sandboxes: SandboxStore,
        node: NodeClient,
        locks: SandboxLockFamily,
        between_steps: BetweenSteps | None = None,
    ) -> None:
        self._sandboxes = sandboxes
        self._node = node
        self._locks = locks
        self.between_steps = between_steps

    async def patch_metadata(
        self, *, team_id: TeamID, sandbox_id: str, patch: object
    ) -> dict[str, str]:
        """Merge ``patch`` (``key: str`` sets, ``key: None | ""`` removes) and return the map."""
        changes = check_metadata_patch(patch)
        sandbox = await self._sandboxes.find_sandbox(sandbox_id, team_id=team_id)
        if sandbox is None or sandbox.state is SandboxState.KILLED:
            raise _not_found(sandbox_id)
        # Shielded: once started, the two steps (and any rollback) run to their end.
        task = asyncio.ensure_future(self._patch_locked(team_id, sandbox.id, changes))
        return await asyncio.shield(task)

    async def _patch_locked(
        self, team_id: TeamID, sandbox_id: SandboxID, changes: Mapping[str, str | None]
    ) -> dict[str, str]:
        async with self._locks.hold(sandbox_id):
            before = await self._sandboxes.find_sandbox(sandbox_id, team_id=team_id)
            if before is None or before.state is SandboxState.KILLED:
                raise _not_found(sandbox_id)
            merged = {k: v for k, v in before.metadata.items() if k not in changes}
            merged.update({k: v for k, v in changes.items() if v is not None})
            check_metadata(merged)  # the total limits, as create applies them
            try:
                after = await self._sandboxes.patch_metadata(
                    sandbox_id, changes, team_id=team_id, required_states=_PATCHABLE
                )
            except NotFoundError as exc:
                raise _not_found(sandbox_id) from exc
            try:
                if self.between_steps is not None:
                    await self.between_steps(sandbox_id)
                await self._node.set_metadata(sandbox_id, after)
            except BaseException:
                undo = {k: before.metadata.get(k) for k in changes}
                await self._sandboxes.patch_metadata(
                    sandbox_id, undo, team_id=None, required_states=None
                )
                raise
            return after
