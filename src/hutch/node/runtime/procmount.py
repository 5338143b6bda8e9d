"""Bind a host file over a path under a container's ``/proc`` (its per-sandbox ``boot_id``).

runc refuses config mounts inside ``/proc`` except a short list (lxcfs's files), and
``/proc/sys/kernel/random/boot_id`` is not on it. So the node mounts it itself, between
``runc create`` and ``runc start`` (the container's mounts are complete, its process has
not run yet): a small helper process clones the host file as a detached mount
(``open_tree(OPEN_TREE_CLONE)``), makes it read-only (``mount_setattr``), enters the
container's mount namespace (``setns``) and attaches it there (``move_mount``). Nothing in
the container's image is needed, and the sandbox, without ``CAP_SYS_ADMIN``, can neither
write nor unmount it (measured: docs/pause.md).

A separate process because ``setns(CLONE_NEWNS)`` refuses a multi-threaded caller.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Final

from hutch.node.runtime.base import RuntimeFailedError

BOOT_ID_PATH: Final = "/proc/sys/kernel/random/boot_id"
#: The file in a sandbox's bundle directory holding its current boot id.
BOOT_ID_FILE: Final = "boot_id"

# x86_64 and aarch64 share these numbers (the new mount API is in asm-generic).
_HELPER: Final = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
src, pid, target = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def check(r, what):
    if r < 0:
        sys.exit(f"{what}: {os.strerror(ctypes.get_errno())}")
    return r
OPEN_TREE_CLONE, O_CLOEXEC, AT_FDCWD, AT_EMPTY_PATH = 1, 0o2000000, -100, 0x1000
fd = check(libc.syscall(428, AT_FDCWD, src.encode(), OPEN_TREE_CLONE | O_CLOEXEC), "open_tree")
class MountAttr(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in ("set", "clr", "propagation", "userns_fd")]
ro = MountAttr(1, 0, 0, 0)  # MOUNT_ATTR_RDONLY
size = ctypes.sizeof(ro)
check(libc.syscall(442, fd, b"", AT_EMPTY_PATH, ctypes.byref(ro), size), "mount_setattr")
ns = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
check(libc.setns(ns, 0x00020000), "setns")  # CLONE_NEWNS
check(libc.syscall(429, fd, b"", AT_FDCWD, target.encode(), 0x4), "move_mount")  # F_EMPTY_PATH
"""


async def bind_over(pid: int, source: Path, target: str) -> None:
    """Mount ``source`` (a host file) read-only at ``target`` in ``pid``'s mount namespace."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-I", "-S", "-c", _HELPER, str(source), str(pid), target,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeFailedError(
            f"mounting {source} at {target} in pid {pid}'s namespace failed: "
            + err.decode(errors="replace").strip()
        )
