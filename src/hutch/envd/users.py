"""Users and the paths they name: who a request runs as, and what its paths mean.

Paths are resolved the way E2B's envd resolves them: ``~`` and ``~/x`` expand to the user's
home, relative paths are taken relative to the home, an empty path means the default
workdir (or the home). ``..`` is resolved lexically and honestly: envd runs as root inside
its sandbox, so the sandbox is the boundary; file operations act as root for the user,
who only decides the ownership of what is created (ADR 12, as E2B's envd).
"""

from __future__ import annotations

import os
import posixpath
import pwd
from dataclasses import dataclass

from hutch.shared.errors import InvalidArgumentError, UnauthenticatedError


@dataclass(frozen=True, kw_only=True)
class User:
    """A user account of the machine envd runs on."""

    name: str
    uid: int
    gid: int
    home: str
    shell: str
    groups: tuple[int, ...]


def get_user(name: str) -> User:
    """The account called ``name``; raises ``UnauthenticatedError`` when there is none."""
    if not name or "\x00" in name:
        raise UnauthenticatedError(f"invalid user: {name!r}")
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise UnauthenticatedError(f"invalid user: user {name!r} does not exist") from None
    try:
        groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
    except OSError:
        groups = (entry.pw_gid,)
    return User(
        name=entry.pw_name,
        uid=entry.pw_uid,
        gid=entry.pw_gid,
        home=entry.pw_dir or "/",
        shell=entry.pw_shell or "/bin/sh",
        groups=groups,
    )


def resolve_path(path: str, *, user: User, default_workdir: str | None = None) -> str:
    """The absolute, normalised path that ``path`` names for ``user``."""
    if "\x00" in path:
        raise InvalidArgumentError("path contains a NUL byte")
    if path == "":
        path = default_workdir or user.home
    if path == "~" or path.startswith("~/"):
        path = user.home + path[1:]
    elif path.startswith("~"):
        raise InvalidArgumentError(f"path {path!r}: only '~' and '~/' can be expanded")
    if not posixpath.isabs(path):
        path = posixpath.join(user.home, path)
    resolved = posixpath.normpath(path)
    # normpath keeps a leading '//' (POSIX allows it to mean something else); we do not.
    if resolved.startswith("//"):
        resolved = "/" + resolved.lstrip("/")
    return resolved
