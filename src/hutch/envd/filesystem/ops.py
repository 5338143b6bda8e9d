"""Filesystem operations on behalf of a user: stat, list, make dir, move, remove.

Paths arrive absolute and normalised (``Envd.path``). envd runs as root and acts as root
on behalf of the user, as E2B's envd does (ADR 12): the user decides ownership, not access.
Directories created for a user are owned by that user, as E2B's ``EnsureDirs`` does. Every
function is blocking (the transport runs them in a worker thread) and raises
``hutch.shared.errors`` only.
"""

from __future__ import annotations

import errno
import os
import posixpath
import shutil
import stat

from hutch.envd.filesystem.entries import Entry, NameCache, entry_from_stat, get_entry
from hutch.envd.users import User
from hutch.shared.errors import (
    AlreadyExistsError,
    InvalidArgumentError,
    NotFoundError,
    from_os_error,
)


def stat_entry(path: str, *, user: User) -> Entry:
    """The entry at ``path`` (a final symlink is described, not followed).

    Not gated by read permission: like ``stat(2)``, describing a path does not read it.
    """
    return get_entry(path)


def _resolve_directory(path: str) -> str:
    """The real path of the directory ``path`` names (following symlinks)."""
    try:
        real = os.path.realpath(path, strict=True)
        st = os.stat(real)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InvalidArgumentError(f"{path}: cyclic symlink") from exc
        raise from_os_error(exc, path) from exc
    if not stat.S_ISDIR(st.st_mode):
        raise InvalidArgumentError(f"path is not a directory: {path}")
    return real


def list_dir(path: str, *, user: User, depth: int = 1) -> list[Entry]:
    """Entries under the directory ``path``, down to ``depth`` levels (0 means 1).

    ``path`` itself may be a symlink to a directory; entries are then reported under the
    real directory, as E2B does. Symlinked directories found while walking are listed but
    never entered, so links cannot make the walk loop. Order: by name, each directory
    followed by its own entries. Entries that vanish mid-walk are skipped.
    """
    depth = max(depth, 1)
    root = _resolve_directory(path)
    names = NameCache()
    entries: list[Entry] = []

    def children_of(directory: str) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(directory) as it:
                return sorted(it, key=lambda d: d.name)
        except OSError as exc:
            if directory == root:
                raise from_os_error(exc, path) from exc
            return []

    # Iterative depth-first walk: trees may be nested deeper than Python's recursion limit.
    stack = [(1, iter(children_of(root)))]
    while stack:
        level, children = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            continue
        try:
            st = child.stat(follow_symlinks=False)
        except OSError:
            continue
        entries.append(entry_from_stat(child.path, st, names=names, name=child.name))
        if level < depth and stat.S_ISDIR(st.st_mode):
            stack.append((level + 1, iter(children_of(child.path))))
    return entries


def _ensure_dirs(path: str, *, user: User) -> None:
    """Create ``path`` and its missing parents, each owned by ``user``."""
    missing: list[str] = []
    current = path
    while not os.path.lexists(current):
        missing.append(current)
        parent = posixpath.dirname(current)
        if parent == current:
            break
        current = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o755)
        except FileExistsError:
            continue  # created concurrently: fine, it is what we wanted
        except OSError as exc:
            raise from_os_error(exc, directory) from exc
        try:
            os.chown(directory, user.uid, user.gid)
        except OSError as exc:
            raise from_os_error(exc, directory) from exc
    if not os.path.isdir(path):
        raise InvalidArgumentError(f"path is not a directory: {path}")


def make_dir(path: str, *, user: User) -> Entry:
    """Create the directory ``path`` and its parents, owned by ``user``.

    ``AlreadyExistsError`` when a directory is already there (the SDK's ``make_dir``
    answers False), ``InvalidArgumentError`` when something else is.
    """
    if os.path.isdir(path):
        raise AlreadyExistsError(f"directory already exists: {path}")
    if os.path.lexists(path):
        raise InvalidArgumentError(f"path already exists but it is not a directory: {path}")
    _ensure_dirs(path, user=user)
    return get_entry(path)


def move(source: str, destination: str, *, user: User) -> Entry:
    """Rename ``source`` to ``destination``, creating the destination's parents.

    Like ``rename(2)``: an existing file at the destination is replaced, an empty directory
    too. Across filesystems the tree is copied then removed, but never onto an existing
    path (the copy could not be atomic).
    """
    if not os.path.lexists(source):
        raise NotFoundError(f"source not found: {source}")
    if source == "/" or destination == "/":
        raise InvalidArgumentError("cannot move the root directory")
    _ensure_dirs(posixpath.dirname(destination), user=user)
    try:
        os.rename(source, destination)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise from_os_error(exc, f"{source} -> {destination}") from exc
        if os.path.lexists(destination):
            raise InvalidArgumentError(
                f"{destination}: exists, and is on another filesystem than {source}"
            ) from exc
        try:
            shutil.move(source, destination)
        except OSError as copy_exc:
            raise from_os_error(copy_exc, f"{source} -> {destination}") from copy_exc
    return get_entry(destination)


def remove(path: str, *, user: User) -> None:
    """Remove the file, symlink (not its target) or whole directory tree at ``path``.

    Like ``rm -rf`` (E2B's envd calls Go's ``os.RemoveAll``): nothing there is success, so
    clients can clean up before they start.
    """
    if path == "/":
        raise InvalidArgumentError("cannot remove the root directory")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise from_os_error(exc, path) from exc
    is_tree = stat.S_ISDIR(st.st_mode)
    try:
        if is_tree:
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        return  # removed concurrently: what was asked for
    except OSError as exc:
        raise from_os_error(exc, getattr(exc, "filename", None) or path) from exc
