"""May this user read or write here? Checked by hand because envd itself runs as root.

The kernel cannot check for us without changing envd's credentials (per-thread fsuid
switching breaks under a thread pool), so we apply the classic owner/group/other rules along
the real path, including search permission on every ancestor and the sticky bit. Root may do
anything, as in the kernel (ACLs and capabilities beyond that are not modelled).
"""

from __future__ import annotations

import os
import posixpath
import stat

from hutch.envd.users import User
from hutch.shared.errors import PermissionDeniedError

_R, _W, _X = 4, 2, 1


def _allows(st: os.stat_result, user: User, bits: int) -> bool:
    if st.st_uid == user.uid:
        mode = (st.st_mode >> 6) & 7
    elif st.st_gid == user.gid or st.st_gid in user.groups:
        mode = (st.st_mode >> 3) & 7
    else:
        mode = st.st_mode & 7
    return mode & bits == bits


def _check_search(directory: str, user: User, path: str) -> None:
    """Every directory from / down to ``directory`` (inclusive) must be searchable."""
    current = "/"
    for part in [p for p in directory.split("/") if p]:
        st = os.stat(current)
        if not _allows(st, user, _X):
            raise PermissionDeniedError(f"{path}: permission denied for user {user.name!r}")
        current = posixpath.join(current, part)
    st = os.stat(current)
    if stat.S_ISDIR(st.st_mode) and not _allows(st, user, _X):
        raise PermissionDeniedError(f"{path}: permission denied for user {user.name!r}")


def _nearest_existing(path: str) -> str:
    current = path
    while not os.path.lexists(current):
        parent = posixpath.dirname(current)
        if parent == current:
            break
        current = parent
    return current


def check_read(path: str, user: User) -> None:
    """Raise ``PermissionDeniedError`` unless ``user`` may read ``path`` (when it exists)."""
    if user.uid == 0 or not os.path.exists(path):
        return
    real = os.path.realpath(path)
    _check_search(posixpath.dirname(real), user, path)
    if not _allows(os.stat(real), user, _R):
        raise PermissionDeniedError(f"{path}: permission denied for user {user.name!r}")


def check_write(path: str, user: User) -> None:
    """Raise ``PermissionDeniedError`` unless ``user`` may create, replace or remove ``path``.

    Missing parent directories count as created by the user, so the nearest existing
    ancestor must be writable by them.
    """
    if user.uid == 0:
        return
    denied = PermissionDeniedError(f"{path}: permission denied for user {user.name!r}")
    parent = posixpath.dirname(path) or "/"
    anchor = os.path.realpath(_nearest_existing(parent))
    if not os.path.isdir(anchor):
        return  # the write itself will fail with "not a directory", a clearer error
    _check_search(anchor, user, path)
    anchor_st = os.stat(anchor)
    if not _allows(anchor_st, user, _W | _X):
        raise denied
    if os.path.lexists(path) and anchor == os.path.realpath(parent):
        target = os.lstat(path)
        if (
            anchor_st.st_mode & stat.S_ISVTX
            and target.st_uid not in (user.uid,)
            and (anchor_st.st_uid != user.uid)
        ):
            raise denied
        if stat.S_ISREG(target.st_mode) and not _allows(target, user, _W):
            raise denied
