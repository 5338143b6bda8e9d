"""Pause, resume (connect, the deprecated ``resume``, auto-resume) and auto-pause (ADR 0004).

Every transition holds the sandbox's lock (``locks.py``) from the first store write to the
last, and is recorded before the node acts, so a crash leaves a transient state that
startup reconciliation settles (``service/reconcile.py``):

* pause: ``running → pausing`` → ``node.pause`` → ``paused`` (with ``pause_mode``); on a node
  failure back to ``running``;
* resume: ``paused → resuming`` → ``node.resume`` → ``running`` with a fresh deadline; on a
  node failure back to ``paused``.

A pause whose node stopped answering (its lease ended, ``NodeUnresponsiveError``, ADR 0033)
goes back to ``running`` too, and since the node may still carry it out once it answers, a
background task then asks the node to resume it (a no-op on a running sandbox) until it
answers, so the row and the node agree on ``running``.

Answers where E2B defines them (e2b-dev/infra ``sandbox_pause.go``, ``sandbox_connect.go``,
``sandbox_resume.go``): pause of a paused sandbox 409 "already paused" (the SDK's
``pause()`` then says False); pause in another transient state 409 naming it; connect to a
running sandbox 200 (only extends its deadline), to a paused one 201 (resumed), to one
being killed 409; the deprecated resume of a running sandbox 409 "already running"; killed
or another team's: 404. Two resumes at once: the second waits on the lock and finds the
sandbox running (connect 200). A kill during a pause waits for it and kills the paused
sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import timedelta

from hutch.api import metrics
from hutch.api.models import Sandbox, SandboxState, SandboxStateConflictError, TeamQuotas
from hutch.api.nodes_model import NodeFit
from hutch.api.service.create_watch import NodeUnresponsiveError
from hutch.api.service.locks import SandboxLockFamily
from hutch.api.service.ports import NodeClient
from hutch.api.service.quotas import QuotaService
from hutch.api.service.sandboxes import SandboxPolicy, SandboxService
from hutch.api.service.validation import check_timeout
from hutch.api.store.base import Clock, SandboxStore, utc_now
from hutch.api.store.placement import NodeTaken
from hutch.shared.errors import (
    ConflictError,
    HutchError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from hutch.shared.ids import NodeID, TeamID

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Resumed:
    """The outcome of a connect or resume."""

    sandbox: Sandbox
    #: False: it was running already (connect answers 200, not 201).
    resumed: bool
    #: False when only its filesystem came back (a fresh boot: new boot id, processes gone).
    memory_kept: bool = True


def _not_found(sandbox_id: str) -> NotFoundError:
    return NotFoundError(
        f"sandbox {sandbox_id} not found", public_message=f"Sandbox {sandbox_id} not found"
    )


class PauseService:
    """The pause and resume verbs; shares the lock family with the other services."""

    def __init__(
        self,
        *,
        sandboxes: SandboxStore,
        node: NodeClient,
        locks: SandboxLockFamily,
        service: SandboxService,
        policy: SandboxPolicy,
        clock: Clock = utc_now,
        quotas: QuotaService | None = None,
    ) -> None:
        self._quotas = quotas
        self._sandboxes = sandboxes
        self._node = node
        self._locks = locks
        self._service = service
        self._policy = policy
        self._clock = clock
        #: The undo tasks of pauses cut short (the module docstring), held until done.
        self._undoing: set[asyncio.Task[None]] = set()
        #: Between the undo's tries (tests shorten it).
        self.undo_interval_s = 1.0
        #: How many tries before the undo gives up (the lost-node sweeper then has it).
        self.undo_tries = 600

    async def _find(self, team_id: TeamID | None, sandbox_id: str) -> Sandbox:
        sandbox = await self._sandboxes.find_sandbox(sandbox_id, team_id=team_id)
        if sandbox is None or sandbox.state is SandboxState.KILLED:
            raise _not_found(sandbox_id)
        return sandbox

    # -- pause ----------------------------------------------------------------------------

    @metrics.observed("pause")
    async def pause(
        self, *, team_id: TeamID | None, sandbox_id: str, keep_memory: bool = True
    ) -> Sandbox:
        """Pause a running sandbox (see the module docstring for the other states)."""
        sandbox = await self._find(team_id, sandbox_id)
        async with self._locks.hold(sandbox.id):
            sandbox = await self._find(team_id, sandbox.id)
            if sandbox.state is SandboxState.PAUSED:
                raise ConflictError(
                    f"sandbox {sandbox.id} is already paused",
                    public_message=f"Error pausing sandbox - sandbox '{sandbox.id}' is already "
                    "paused",
                )
            if sandbox.state is not SandboxState.RUNNING:
                raise ConflictError(
                    f"sandbox {sandbox.id} is {sandbox.state}",
                    public_message=f"Sandbox '{sandbox.id}' cannot be paused while in "
                    f"'{sandbox.state}' state",
                )
            # The public view shows ``pausing`` as ``paused``: the row carries the mode asked
            # for from this step on, and the node's answer (it may keep only files) after.
            # maxPausedSandboxes is checked in this move's own transaction.
            await self._move(
                sandbox, SandboxState.RUNNING, SandboxState.PAUSING,
                pause_mode="full" if keep_memory else "filesystem",
                quota=await self._quota_of(sandbox),
            )  # fmt: skip
            try:
                kept = await self._node.pause(sandbox.id, keep_memory=keep_memory)
            except BaseException as exc:
                await self._move(sandbox, SandboxState.PAUSING, SandboxState.RUNNING)
                if isinstance(exc, NodeUnresponsiveError):
                    task = asyncio.create_task(self._undo_pause(sandbox))
                    self._undoing.add(task)
                    task.add_done_callback(self._undoing.discard)
                raise
            return await self._sandboxes.set_state(
                sandbox.id,
                team_id=None,
                expected=SandboxState.PAUSING,
                new=SandboxState.PAUSED,
                pause_mode="full" if kept else "filesystem",
            )

    async def _undo_pause(self, sandbox: Sandbox) -> None:
        """Resume a sandbox whose pause was cut short, once its node answers (a no-op if
        the node never paused it); given up once the row is no longer ``running`` on that
        node (killed, lost, paused by a later request) or after ``undo_tries``."""
        for _ in range(self.undo_tries):
            await asyncio.sleep(self.undo_interval_s)
            try:
                async with self._locks.hold(sandbox.id):
                    row = await self._sandboxes.find_sandbox(sandbox.id, team_id=None)
                    if (
                        row is None
                        or row.state is not SandboxState.RUNNING
                        or row.node_id != sandbox.node_id
                    ):
                        return
                    spec = await self._service.spec_with_volumes(row)
                    resumed = await self._node.resume(spec, keep_memory=True)
                    if resumed.placed.address != row.address:  # booted again (filesystem)
                        with contextlib.suppress(SandboxStateConflictError, NotFoundError):
                            await self._sandboxes.set_state(
                                row.id, team_id=None, expected=SandboxState.RUNNING,
                                new=SandboxState.RUNNING, address=resumed.placed.address,
                                node_id=resumed.placed.node_id,
                            )  # fmt: skip
                    _log.info("sandbox %s: its cut-short pause is undone on node %s",
                              sandbox.id, sandbox.node_id)  # fmt: skip
                    return
            except HutchError as exc:  # still silent (or busy): the next try
                _log.info("sandbox %s: undoing its cut-short pause: %s", sandbox.id, exc)
            except Exception:
                _log.exception("sandbox %s: undoing its cut-short pause failed", sandbox.id)
                return
        _log.warning("sandbox %s: its cut-short pause was not undone", sandbox.id)

    async def _move(
        self,
        sandbox: Sandbox,
        expected: SandboxState,
        new: SandboxState,
        *,
        pause_mode: str | None = None,
        quota: TeamQuotas | None = None,
        fit: tuple[NodeID, NodeFit] | None = None,
    ) -> None:
        try:
            await self._sandboxes.set_state(
                sandbox.id, team_id=None, expected=expected, new=new, pause_mode=pause_mode,
                quota=quota, fit=fit,
            )  # fmt: skip
        except NodeTaken as exc:
            # A paused sandbox resumes where its memory and files are (ADR 0026): it stays
            # paused, and the SDK retries infra's 503 like a create's.
            raise UnavailableError(
                f"sandbox {sandbox.id} does not fit on its node {exc.node_id}: {exc.reason}",
                public_message=f"Failed to resume sandbox {sandbox.id}: its node "
                f"{exc.node_id} has no room for it right now ({exc.reason}), please retry "
                "shortly",
                error_code="sandbox_capacity_unavailable",
            ) from exc
        except SandboxStateConflictError as exc:
            # Only a writer outside the lock (a kill's first step) can get here.
            raise ConflictError(
                f"sandbox {sandbox.id} changed state to {exc.state} during {new}",
                public_message=f"Sandbox {sandbox.id} is {exc.state}",
            ) from exc

    # -- resume ---------------------------------------------------------------------------

    async def connect(
        self,
        *,
        team_id: TeamID | None,
        sandbox_id: str,
        timeout_s: int | None,
        keep_memory: bool = True,
        api_version: int = 2,
    ) -> Resumed:
        """``connect``: attach to a running sandbox (deadline only extended) or resume a
        paused one with a deadline ``timeout_s`` from now."""
        if timeout_s is None:
            if api_version < 2:
                raise InvalidArgumentError("timeout is required")
            timeout_s = self._policy.default_timeout_v2_s
        check_timeout(timeout_s, field="timeout", minimum=0)
        sandbox = await self._find(team_id, sandbox_id)
        async with self._locks.hold(sandbox.id):
            sandbox = await self._find(team_id, sandbox.id)
            if sandbox.state in (SandboxState.RUNNING, SandboxState.CREATING):
                attached = await self._service.connect(
                    team_id=sandbox.team_id, sandbox_id=sandbox.id, timeout_s=timeout_s,
                    api_version=api_version,
                )  # fmt: skip
                return Resumed(sandbox=attached, resumed=False)
            if sandbox.state is not SandboxState.PAUSED:
                raise ConflictError(
                    f"sandbox {sandbox.id} is {sandbox.state}",
                    public_message=f"Sandbox {sandbox.id} is {sandbox.state}, try again later",
                )
            return await self._resume_locked(sandbox, timeout_s, keep_memory=keep_memory)

    async def resume(self, *, team_id: TeamID, sandbox_id: str, timeout_s: int | None) -> Resumed:
        """The deprecated ``POST /sandboxes/{id}/resume``: 409 if it is running."""
        timeout = self._policy.default_timeout_v2_s if timeout_s is None else timeout_s
        check_timeout(timeout, field="timeout", minimum=0)
        sandbox = await self._find(team_id, sandbox_id)
        async with self._locks.hold(sandbox.id):
            sandbox = await self._find(team_id, sandbox.id)
            if sandbox.state is SandboxState.KILLING:
                raise _not_found(sandbox.id)
            if sandbox.state is not SandboxState.PAUSED:
                raise ConflictError(
                    f"sandbox {sandbox.id} is {sandbox.state}",
                    public_message=f"Sandbox {sandbox.id} is already running"
                    if sandbox.state is SandboxState.RUNNING
                    else f"Sandbox {sandbox.id} is {sandbox.state}",
                )
            return await self._resume_locked(sandbox, timeout, keep_memory=True)

    async def auto_resume(self, sandbox_id: str) -> Resumed:
        """Resume for proxy traffic (any team): the deadline restarts with the sandbox's
        own create-time timeout."""
        sandbox = await self._find(None, sandbox_id)
        if not sandbox.auto_resume:
            raise ConflictError(f"sandbox {sandbox_id} does not resume on traffic")
        timeout = sandbox.timeout_s or self._policy.default_timeout_v2_s
        return await self.connect(team_id=None, sandbox_id=sandbox.id, timeout_s=timeout)

    async def _quota_of(self, sandbox: Sandbox) -> TeamQuotas | None:
        return None if self._quotas is None else await self._quotas.effective(sandbox.team_id)

    @metrics.observed("resume")
    async def _resume_locked(
        self, sandbox: Sandbox, timeout_s: int, *, keep_memory: bool
    ) -> Resumed:
        # A resume joins the running set: the running quotas are checked in this move's
        # transaction, as a create's (429, and the sandbox stays paused), and so is its
        # node's capacity, under that node's placement lock (503, it stays paused).
        await self._move(
            sandbox, SandboxState.PAUSED, SandboxState.RESUMING,
            quota=await self._quota_of(sandbox), fit=self._service.resume_fit(sandbox),
        )  # fmt: skip
        try:
            spec = await self._service.spec_with_volumes(sandbox)
            resumed = await self._node.resume(spec, keep_memory=keep_memory)
        except BaseException:
            await self._move(sandbox, SandboxState.RESUMING, SandboxState.PAUSED)
            raise
        if not resumed.memory_kept:
            _log.info("sandbox %s resumed from its filesystem only", sandbox.id)
        running = await self._sandboxes.set_state(
            sandbox.id,
            team_id=None,
            expected=SandboxState.RESUMING,
            new=SandboxState.RUNNING,
            end_at=self._clock() + timedelta(seconds=timeout_s),
            address=resumed.placed.address,
            node_id=resumed.placed.node_id,
        )
        return Resumed(sandbox=running, resumed=True, memory_kept=resumed.memory_kept)
