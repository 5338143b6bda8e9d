"""The timeout reaper: kills (or, with ``autoPause``, pauses) sandboxes past their deadline.

The API owns timeouts (the node is never told a deadline), so one loop per API instance
asks the store for expired sandboxes and kills them through the same path as
``DELETE /sandboxes/{id}``. Several API instances may reap at once: the kill's
compare-and-set (``running → killing``) lets exactly one of them act on each sandbox.

``reap_once(now)`` is the unit of work and takes the time as an argument, so tests never
depend on the wall clock; :meth:`Reaper.run` is the background loop ``app.py`` starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta
from typing import Final

from hutch.api.models import Sandbox, SandboxState, SandboxStateConflictError
from hutch.api.service.pausing import PauseService
from hutch.api.service.sandboxes import SandboxService
from hutch.api.store.base import Clock, SandboxStore, utc_now
from hutch.shared.errors import HutchError, NotFoundError, QuotaExceededError

_log = logging.getLogger(__name__)
_BATCH: Final = 100


class Reaper:
    """Kills expired sandboxes; see the module docstring."""

    def __init__(
        self,
        *,
        sandboxes: SandboxStore,
        service: SandboxService,
        pausing: PauseService | None = None,
        clock: Clock = utc_now,
        interval_s: float = 1.0,
        stale_create_s: float = 600.0,
    ) -> None:
        self._sandboxes = sandboxes
        self._stale_create = timedelta(seconds=stale_create_s)
        self._service = service
        self._pausing = pausing
        self._clock = clock
        self._interval_s = interval_s
        self._nudged = asyncio.Event()

    def nudge(self) -> None:
        """Run the next pass now instead of at the next tick (a deadline was set to now)."""
        self._nudged.set()

    async def reap_once(self, now: datetime) -> int:
        """Kill every sandbox running past its deadline at ``now``; return how many.

        A sandbox whose kill fails stays ``killing`` with its old deadline and is retried
        on the next pass (killing is idempotent on the node).
        """
        killed = await self.settle_stale_creates(now)
        seen: set[str] = set()
        while True:
            expired = await self._sandboxes.list_expired(
                now, states=frozenset({SandboxState.RUNNING, SandboxState.KILLING}), limit=_BATCH
            )
            todo = [s for s in expired if s.id not in seen]
            if not todo:
                return killed
            for sandbox in todo:
                seen.add(sandbox.id)
                try:
                    if sandbox.state is SandboxState.KILLING:
                        await self._finish_kill(sandbox.id)
                    elif sandbox.auto_pause and self._pausing is not None:
                        # autoPause: the timeout pauses instead of killing (ADR 0004).
                        await self._auto_pause(sandbox)
                    else:
                        await self._service.kill_sandbox(team_id=None, sandbox_id=sandbox.id)
                    killed += 1
                except NotFoundError:
                    pass  # killed by someone else meanwhile
                except HutchError as exc:
                    _log.warning("reaper: killing %s failed: %s", sandbox.id, exc.message)

    async def settle_stale_creates(self, now: datetime) -> int:
        """Kill the sandboxes of creates whose api died mid-way: rows still ``creating``
        ``stale_create_s`` after their insert (longer than a create's node call may take,
        so the api that made the row is gone). Each goes ``killing`` with its deadline now
        (a compare-and-set: a create that does finish late finds it killed and rolls back)
        and is killed on its node at once, or on a later pass while the node does not
        answer. Returns how many were settled."""
        settled = 0
        for sandbox in await self._sandboxes.list_stale_creates(
            started_before=now - self._stale_create, limit=_BATCH
        ):
            try:
                await self._sandboxes.set_state(
                    sandbox.id, team_id=None, expected=SandboxState.CREATING,
                    new=SandboxState.KILLING, end_at=now,
                )  # fmt: skip
            except (SandboxStateConflictError, NotFoundError):
                continue  # its create ended meanwhile
            _log.warning(
                "reaper: sandbox %s was still creating %s after it was asked for (its api "
                "stopped mid-create); killing it", sandbox.id, now - sandbox.started_at,
            )  # fmt: skip
            settled += 1
            try:
                await self._finish_kill(sandbox.id)
            except NotFoundError:
                pass
            except HutchError as exc:  # the next pass tries again (the row is killing)
                _log.warning("reaper: killing %s failed: %s", sandbox.id, exc.message)
        return settled

    async def _auto_pause(self, sandbox: Sandbox) -> None:
        """Pause at the deadline; past the team's ``maxPausedSandboxes`` the timeout kills
        it as it would without ``autoPause`` (it cannot run on past its deadline)."""
        assert self._pausing is not None
        try:
            await self._pausing.pause(
                team_id=None, sandbox_id=sandbox.id, keep_memory=sandbox.auto_pause_memory
            )
        except QuotaExceededError as exc:
            _log.warning("reaper: %s killed at its timeout, not paused: %s", sandbox.id, exc)
            await self._service.kill_sandbox(team_id=None, sandbox_id=sandbox.id)

    async def _finish_kill(self, sandbox_id: str) -> None:
        await self._service.finish_kill(sandbox_id)

    async def run(self) -> None:
        """Reap every ``interval_s`` until cancelled; errors are logged, never fatal."""
        while True:
            try:
                await self.reap_once(self._clock())
            except asyncio.CancelledError:
                raise
            except Exception:
                _log.exception("reaper pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._nudged.wait(), self._interval_s)
            self._nudged.clear()
