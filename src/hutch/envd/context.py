"""The long-lived objects of one envd, handed to its transports by ``app.create_app``."""

from __future__ import annotations

from dataclasses import dataclass

from hutch.envd.filesystem.uploads import UploadManager
from hutch.envd.filesystem.watcher import WatcherManager
from hutch.envd.process.manager import ProcessManager
from hutch.envd.settings import EnvdSettings
from hutch.envd.state import EnvdState
from hutch.envd.users import User, get_user, resolve_path


@dataclass(kw_only=True)
class Envd:
    """One envd: its settings, run-time state and the managers of its live resources."""

    settings: EnvdSettings
    state: EnvdState
    processes: ProcessManager
    watchers: WatcherManager
    uploads: UploadManager

    def user(self, name: str | None) -> User:
        """The named user, or the default user when ``name`` is empty."""
        return get_user(name or self.state.default_user)

    def path(self, path: str, user: User) -> str:
        """``path`` resolved for ``user`` (see ``users.resolve_path``)."""
        return resolve_path(path, user=user, default_workdir=self.state.default_workdir)
