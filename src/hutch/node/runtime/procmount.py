"""Bind a host file over a path under a container's ``/proc`` (its per-sandbox ``boot_id``).

runc refuses config mounts inside ``/proc`` except a short list (lxcfs's files), and
``/proc/sys/kernel/random/boot_id`` is not on it. So the node mounts it itself, between
``runc create`` and ``runc start`` (the container's mounts are complete, its process has
not run yet): the host file is cloned as a detached mount (``open_tree(OPEN_TREE_CLONE)``),
made read-only (``mount_setattr``), and attached in the container's mount namespace
(``setns``, ``move_mount``). Nothing in the container's image is needed, and the sandbox,
without ``CAP_SYS_ADMIN``, can neither write nor unmount it (measured: docs/pause.md).

``setns(CLONE_NEWNS)`` refuses a caller whose filesystem context (root, cwd) is shared,
which every thread of a process shares by default. So the attach runs in a thread of its
own that first unshares that context (``unshare(CLONE_FS)``), enters the namespace, moves
the mount and ends: namespaces and the filesystem context are per thread, so nothing else
of the node sees the container's mounts, and the thread is never reused (not a pool's).
This replaced a helper interpreter per boot (``python -I -S -c``: 20-35 ms of a cold
create on a loaded 2-core host, issue 19; ADR 0041).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import threading
from pathlib import Path
from typing import Final

from hutch.node.runtime.base import RuntimeFailedError

BOOT_ID_PATH: Final = "/proc/sys/kernel/random/boot_id"
#: The file in a sandbox's bundle directory holding its current boot id.
BOOT_ID_FILE: Final = "boot_id"

# x86_64 and aarch64 share these numbers (the new mount API is in asm-generic).
_OPEN_TREE: Final = 428
_MOVE_MOUNT: Final = 429
_MOUNT_SETATTR: Final = 442
_OPEN_TREE_CLONE: Final = 1
_AT_FDCWD: Final = -100
_AT_EMPTY_PATH: Final = 0x1000
_MOVE_MOUNT_F_EMPTY_PATH: Final = 0x4
_MOUNT_ATTR_RDONLY: Final = 1
_CLONE_FS: Final = 0x00000200
_CLONE_NEWNS: Final = 0x00020000

_libc = ctypes.CDLL(None, use_errno=True)


class _MountAttr(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in ("set", "clr", "propagation", "userns_fd")]


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def _attach(source: Path, pid: int, target: str) -> None:
    """In a thread that ends right after: clone ``source``, enter ``pid``'s mounts, attach."""
    tree = _check(
        _libc.syscall(_OPEN_TREE, _AT_FDCWD, os.fsencode(source), _OPEN_TREE_CLONE | os.O_CLOEXEC),
        "open_tree",
    )
    try:
        ro = _MountAttr(_MOUNT_ATTR_RDONLY, 0, 0, 0)
        _check(
            _libc.syscall(_MOUNT_SETATTR, tree, b"", _AT_EMPTY_PATH, ctypes.byref(ro),
                          ctypes.sizeof(ro)),
            "mount_setattr",
        )  # fmt: skip
        ns = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _check(_libc.unshare(_CLONE_FS), "unshare(CLONE_FS)")  # this thread's alone
            _check(_libc.setns(ns, _CLONE_NEWNS), "setns")
        finally:
            os.close(ns)
        _check(
            _libc.syscall(_MOVE_MOUNT, tree, b"", _AT_FDCWD, target.encode(),
                          _MOVE_MOUNT_F_EMPTY_PATH),
            "move_mount",
        )  # fmt: skip
    finally:
        os.close(tree)


async def bind_over(pid: int, source: Path, target: str) -> None:
    """Mount ``source`` (a host file) read-only at ``target`` in ``pid``'s mount namespace."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def finish(error: BaseException | None) -> None:
        if done.cancelled():
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    def work() -> None:
        error: BaseException | None = None
        try:
            _attach(source, pid, target)
        except OSError as exc:
            error = RuntimeFailedError(
                f"mounting {source} at {target} in pid {pid}'s namespace failed: {exc}"
            )
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile (shutdown)
            loop.call_soon_threadsafe(finish, error)

    # A thread of its own, never a pool's: it ends in the container's mount namespace.
    threading.Thread(target=work, name="hutch-bind-over", daemon=True).start()
    await asyncio.shield(done)
