"""The long-lived objects of one envd, handed to its transports by ``app.create_app``.

The process and watch managers are made on first use: a sandbox whose first request is
``/health`` or ``/init`` does not import the PTY, spawn, fan-out or inotify code before it
answers (ADR 16).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from hutch.envd.filesystem.publications import Publications
from hutch.envd.filesystem.uploads import UploadManager
from hutch.envd.settings import EnvdSettings
from hutch.envd.state import EnvdState
from hutch.envd.users import User, get_user, resolve_path
from hutch.shared.malloc import BulkTransfers

if TYPE_CHECKING:
    from hutch.envd.filesystem.watcher import WatcherManager
    from hutch.envd.process.manager import ProcessManager


@dataclass(kw_only=True)
class Envd:
    """One envd: its settings, run-time state and the managers of its live resources."""

    settings: EnvdSettings
    state: EnvdState
    #: What envd's own uploads did, shared by the writer, the upload sessions and watches.
    publications: Publications
    uploads: UploadManager
    #: Uploads in progress: malloc keeps its pages while they run, gives them back after.
    transfers: BulkTransfers = field(default_factory=lambda: BulkTransfers(trim_when_idle=True))

    @cached_property
    def processes(self) -> ProcessManager:
        """The processes envd started (made on first use)."""
        from hutch.envd.process.manager import ProcessManager

        return ProcessManager(state=self.state)

    @cached_property
    def watchers(self) -> WatcherManager:
        """The live watches (made on first use)."""
        from hutch.envd.filesystem.watcher import WatcherManager

        return WatcherManager(publications=self.publications)

    async def close(self) -> None:
        """Stop watches, upload sessions and processes (only the managers that were made)."""
        made = vars(self)
        if "watchers" in made:
            await self.watchers.close()
        await self.uploads.close()
        if "processes" in made:
            await self.processes.close()

    def user(self, name: str | None) -> User:
        """The named user, or the default user when ``name`` is empty."""
        return get_user(name or self.state.default_user)

    def path(self, path: str, user: User) -> str:
        """``path`` resolved for ``user`` (see ``users.resolve_path``)."""
        return resolve_path(path, user=user, default_workdir=self.state.default_workdir)
