"""Snapshots and fork (issue 6, docs/pause.md): templates made from a sandbox's files.

A snapshot is a template of the team (``Sandbox.create(snapshot_id)`` works like a
template name, as often as wanted) plus a ``snapshots`` row naming its source. Order, under
the source sandbox's lock (``locks.py``): the node publishes the files (freezing a running
sandbox for a consistent copy), then the store records the template and the snapshot; if
the store fails, the node's files are removed again. Memory is not captured: sandboxes
from a snapshot boot fresh over its files (``Hutch-Snapshot: filesystem``).

Fork = one snapshot of a running sandbox, then ``count`` creates from it, each with the
source's live metadata, env vars, security and lifecycle; each succeeds or fails alone.
A snapshot keeps the source's network policy: a create from it (so a fork) that sends no
policy of its own gets it.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from dataclasses import dataclass
from typing import Final

from hutch.api.models import (
    NewTemplate,
    Sandbox,
    SandboxState,
    Snapshot,
    SnapshotPage,
    TemplateBuildState,
)
from hutch.api.service.artifacts import ArtifactService
from hutch.api.service.create_watch import NodeUnresponsiveError
from hutch.api.service.locks import SandboxLockFamily
from hutch.api.service.ports import NodeClient
from hutch.api.service.sandboxes import CreateSandboxRequest, SandboxService
from hutch.api.store.base import SandboxStore, SnapshotStore, TemplateStore
from hutch.shared.errors import (
    AlreadyExistsError,
    ConflictError,
    HutchError,
    InvalidArgumentError,
    NotFoundError,
)
from hutch.shared.ids import TeamID, TemplateID

MAX_FORKS: Final = 20
#: Forks started at once (each is a sandbox create).
_FORK_CONCURRENCY: Final = 4
_NAME_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-")


@dataclass(frozen=True, slots=True, kw_only=True)
class ForkResult:
    """One fork: a sandbox, or the error that kept it from starting."""

    sandbox: Sandbox | None = None
    error: HutchError | None = None


def _not_found(sandbox_id: str) -> NotFoundError:
    return NotFoundError(
        f"sandbox {sandbox_id} not found", public_message=f"Sandbox {sandbox_id} not found"
    )


def check_snapshot_name(name: str) -> str:
    """A name usable as a template alias: 1-63 of ``[a-z0-9._-]``, starting alphanumeric."""
    if not (1 <= len(name) <= 63 and set(name) <= _NAME_CHARS and name[0].isalnum()):
        raise InvalidArgumentError(
            f"name: {name[:80]!r} is not a valid snapshot name (1-63 of a-z, 0-9, '.', '_', "
            "'-', starting with a letter or digit)"
        )
    return name


class SnapshotService:
    """The snapshot and fork verbs."""

    def __init__(
        self,
        *,
        sandboxes: SandboxStore,
        templates: TemplateStore,
        snapshots: SnapshotStore,
        node: NodeClient,
        locks: SandboxLockFamily,
        service: SandboxService,
        artifacts: ArtifactService | None = None,
    ) -> None:
        #: Records the snapshot's node as its holder (ADR 0029).
        self._artifacts = artifacts
        self._sandboxes = sandboxes
        self._templates = templates
        self._snapshots = snapshots
        self._node = node
        self._locks = locks
        self._service = service

    async def create_snapshot(
        self, *, team_id: TeamID, sandbox_id: str, name: str | None = None
    ) -> Snapshot:
        """Capture the running or paused sandbox's files as a new snapshot."""
        if name is not None:
            check_snapshot_name(name)
            if await self._templates.find_template_any_team(name) is not None:
                raise AlreadyExistsError(
                    f"a template or snapshot named {name!r} exists already",
                    public_message=f"Snapshot name '{name}' is taken",
                )
        sandbox = await self._find(team_id, sandbox_id)
        async with self._locks.hold(sandbox.id):
            sandbox = await self._find(team_id, sandbox.id)
            if sandbox.state not in (SandboxState.RUNNING, SandboxState.PAUSED):
                raise ConflictError(
                    f"sandbox {sandbox.id} is {sandbox.state}",
                    public_message=f"Sandbox {sandbox.id} is {sandbox.state}; snapshots are "
                    "taken of running or paused sandboxes",
                )
            return await self._capture(sandbox, name=name)

    async def _capture(self, sandbox: Sandbox, *, name: str | None) -> Snapshot:
        snapshot_id = TemplateID(f"snap-{secrets.token_hex(8)}")
        try:
            await self._node.snapshot(sandbox.id, snapshot_id=snapshot_id)
        except NodeUnresponsiveError:
            # Its node may still finish it once it answers (ADR 0033): the delete is marked
            # on that node (``ArtifactService.delete_everywhere``), applied when it beats.
            with contextlib.suppress(HutchError):
                await asyncio.shield(self._forget(snapshot_id, sandbox.team_id))
            raise
        if self._artifacts is not None and sandbox.node_id is not None:
            await self._artifacts.record(snapshot_id, sandbox.node_id)
        try:
            await self._templates.create_template(
                NewTemplate(
                    team_id=sandbox.team_id, alias=name, id=snapshot_id,
                    build_state=TemplateBuildState.READY, cpu_count=sandbox.cpu_count,
                    memory_mb=sandbox.memory_mb, disk_mb=sandbox.disk_mb,
                    envd_version=sandbox.envd_version, public=False,
                )
            )  # fmt: skip
            return await self._snapshots.record_snapshot(
                snapshot_id, team_id=sandbox.team_id, sandbox_id=sandbox.id,
                network=sandbox.network,
            )  # fmt: skip
        except BaseException:
            await asyncio.shield(self._forget(snapshot_id, sandbox.team_id))
            raise

    async def _forget(self, snapshot_id: TemplateID, team_id: TeamID) -> None:
        with contextlib.suppress(NotFoundError):
            await self._templates.delete_template(snapshot_id, team_id=team_id)
        await self._node.delete_snapshot(snapshot_id)

    async def list_snapshots(
        self,
        *,
        team_id: TeamID,
        sandbox_id: str | None = None,
        name: str | None = None,
        limit: int = 100,
        next_token: str | None = None,
    ) -> SnapshotPage:
        """One page of the team's snapshots (``name``: id or name)."""
        if not 1 <= limit <= 100:
            raise InvalidArgumentError("limit must be between 1 and 100")
        return await self._snapshots.list_snapshots(
            team_id=team_id, sandbox_id=sandbox_id, name=name, limit=limit, next_token=next_token
        )

    async def delete_snapshot(self, *, team_id: TeamID, id_or_name: str) -> bool:
        """Delete the team's snapshot; False if ``id_or_name`` is not a snapshot of the team
        (the caller then treats it as an ordinary template)."""
        page = await self._snapshots.list_snapshots(team_id=team_id, name=id_or_name, limit=1)
        if not page.items:
            return False
        await self._forget(page.items[0].id, team_id)
        return True

    async def fork(
        self, *, team_id: TeamID, sandbox_id: str, count: int = 1, timeout_s: int | None = None
    ) -> list[ForkResult]:
        """``count`` new sandboxes from one snapshot of the running sandbox."""
        if isinstance(count, bool) or not 1 <= count <= MAX_FORKS:
            raise InvalidArgumentError(f"count must be between 1 and {MAX_FORKS}")
        sandbox = await self._find(team_id, sandbox_id)
        async with self._locks.hold(sandbox.id):
            sandbox = await self._find(team_id, sandbox.id)
            if sandbox.state is not SandboxState.RUNNING:
                raise ConflictError(
                    f"sandbox {sandbox.id} is {sandbox.state}",
                    public_message=f"Sandbox {sandbox.id} is {sandbox.state}; only running "
                    "sandboxes can be forked",
                )
            snapshot = await self._capture(sandbox, name=None)
        request = CreateSandboxRequest(
            template=snapshot.id, timeout_s=timeout_s, metadata=sandbox.metadata,
            env_vars=sandbox.env_vars, secure=sandbox.envd_access_token is not None,
            auto_pause=sandbox.auto_pause,
            auto_pause_memory=sandbox.auto_pause_memory, auto_resume=sandbox.auto_resume,
            # No policy of its own: the fork gets the snapshot's, the source's in force.
        )  # fmt: skip
        gate = asyncio.Semaphore(_FORK_CONCURRENCY)

        async def one() -> ForkResult:
            async with gate:
                try:
                    made = await self._service.create_sandbox(team_id=team_id, request=request)
                except HutchError as exc:
                    return ForkResult(error=exc)
                return ForkResult(sandbox=made)

        return list(await asyncio.gather(*(one() for _ in range(count))))

    async def _find(self, team_id: TeamID, sandbox_id: str) -> Sandbox:
        sandbox = await self._sandboxes.find_sandbox(sandbox_id, team_id=team_id)
        if sandbox is None or sandbox.state is SandboxState.KILLED:
            raise _not_found(sandbox_id)
        return sandbox
