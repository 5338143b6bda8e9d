"""``openat2(2)`` with ``RESOLVE_BENEATH``: open a path under a directory fd and never leave it.

The kernel refuses (``EXDEV``) any resolution that would leave the starting directory: an
absolute symlink, a symlink or ``..`` climbing above it, a mount crossing
(``RESOLVE_NO_XDEV``), and ``/proc`` magic links. Symlinks that stay inside are followed.
There is no check-then-open race: the kernel checks while it walks.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
from typing import Final

RESOLVE_NO_XDEV: Final = 0x01
RESOLVE_NO_MAGICLINKS: Final = 0x02
RESOLVE_BENEATH: Final = 0x08

# openat2 has the same number on every architecture hutch runs on (x86_64, aarch64).
_SYS_OPENAT2: Final = 437

_libc = ctypes.CDLL(None, use_errno=True)


class _OpenHow(ctypes.Structure):
    _fields_ = [
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    ]


def open_beneath(dirfd: int, rel: str, flags: int, mode: int = 0o600) -> int:
    """``openat2(dirfd, rel, flags, RESOLVE_BENEATH|NO_XDEV|NO_MAGICLINKS)`` → a new fd.

    ``rel == ""`` opens ``dirfd`` itself (as ``"."``). Raises ``OSError`` (``EXDEV`` for an
    escape).
    """
    if platform.machine() not in ("x86_64", "aarch64", "AMD64", "arm64"):  # pragma: no cover
        raise OSError(errno.ENOSYS, "openat2: unsupported architecture")
    how = _OpenHow(
        flags=flags | os.O_CLOEXEC,
        mode=mode if flags & os.O_CREAT else 0,
        resolve=RESOLVE_BENEATH | RESOLVE_NO_XDEV | RESOLVE_NO_MAGICLINKS,
    )
    path = (rel or ".").encode("utf-8", "surrogateescape")
    fd = _libc.syscall(
        _SYS_OPENAT2,
        ctypes.c_int(dirfd),
        ctypes.c_char_p(path),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), rel)
    return int(fd)


O_PATH: Final = getattr(os, "O_PATH", 0o10000000)
