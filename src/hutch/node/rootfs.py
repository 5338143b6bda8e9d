"""A sandbox's root filesystem: an overlay of the template's read-only tree and a private upper.

Layout under a sandbox directory (which is also its OCI bundle)::

    <sandbox_dir>/rootfs         the overlayfs mount point (the container's /)
    <sandbox_dir>/layer/upper    everything the sandbox writes
    <sandbox_dir>/layer/work     overlayfs' scratch directory (same filesystem as upper)

``layer/`` is the sandbox's own disk when the node gave it one (``disk.py``: a loop-mounted
ext4 of the sandbox's disk size), else a plain directory. A sandbox made before disks
existed has ``upper``/``work`` directly in its directory; :func:`upper_dir` finds either.

Creating a sandbox copies nothing. mount(2) and umount2(2) are called directly through
ctypes: 0.1 ms against ~2-3 ms for forking mount(8) (numbers in ``docs/runtime.md``), and no
subprocess outside the adapters. :func:`find_mounts_under` reads ``/proc/self/mountinfo`` so
that a reconciler can find overlays a crashed node left behind.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from hutch.shared.errors import (
    AlreadyExistsError,
    HutchError,
    InvalidArgumentError,
    from_os_error,
)

MNT_DETACH: Final = 2
#: The kernel takes mount options in one page.
_MAX_OPTIONS: Final = 4095
#: overlayfs splits lowerdir on ':' and its options on ','; neither may appear in a path.
_FORBIDDEN_IN_PATH: Final = (":", ",", "\0", "\n")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def rootfs_dir(sandbox_dir: Path) -> Path:
    """Where the sandbox's root filesystem is mounted."""
    return Path(sandbox_dir) / "rootfs"


def upper_dir(sandbox_dir: Path) -> Path:
    """The sandbox's upper directory (its writes): ``layer/upper``, or a legacy ``upper``."""
    sandbox_dir = Path(sandbox_dir)
    legacy = sandbox_dir / "upper"
    if legacy.is_dir() and not (sandbox_dir / "layer").exists():
        return legacy
    return sandbox_dir / "layer" / "upper"


def overlay_options(lower: Sequence[Path], *, upper: Path, work: Path) -> str:
    """The overlayfs option string; ``lower`` is ordered top-most first."""
    if not lower:
        raise InvalidArgumentError("overlay needs at least one lower directory")
    paths = [*lower, upper, work]
    for path in paths:
        text = str(path)
        if not Path(path).is_absolute() or any(c in text for c in _FORBIDDEN_IN_PATH):
            raise InvalidArgumentError(f"unusable overlay path {text!r}")
    lowerdir = ":".join(str(p) for p in lower)
    options = f"lowerdir={lowerdir},upperdir={upper},workdir={work}"
    if len(options.encode()) > _MAX_OPTIONS:
        raise InvalidArgumentError(f"overlay options exceed one page ({len(options)} bytes)")
    return options


def mount_rootfs(sandbox_dir: Path, *, lower: Sequence[Path] | str) -> Path:
    """Mount the sandbox's overlay and return the mount point.

    ``lower`` is the template's read-only tree: one directory, a list (top-most first), or
    a colon-joined string. Raises ``AlreadyExistsError`` if the rootfs is already mounted.
    """
    sandbox_dir = Path(sandbox_dir).absolute()
    lowers = [Path(p) for p in lower.split(":")] if isinstance(lower, str) else list(lower)
    for path in lowers:
        if not path.is_dir():
            raise InvalidArgumentError(f"overlay lower directory does not exist: {path}")
    target = rootfs_dir(sandbox_dir)
    upper = upper_dir(sandbox_dir)
    base = upper.parent
    work = base / "work"
    for path in (target, upper, work):
        try:
            path.mkdir(mode=0o755, parents=True, exist_ok=True)
        except OSError as exc:
            raise from_os_error(exc, str(path)) from exc
    if is_mounted(target):
        raise AlreadyExistsError(f"rootfs already mounted at {target}")
    # upper and work are named through a descriptor of the sandbox directory: the options
    # string is what the sandbox reads in its /proc/self/mountinfo, and a warm pool
    # member's directory carries its pool id, not the sandbox's (ADR 0011). The kernel
    # resolves the paths at mount time; the descriptor is not needed afterwards.
    fd = os.open(base, os.O_PATH | os.O_DIRECTORY)
    try:
        via = Path(f"/proc/self/fd/{fd}")
        options = overlay_options(lowers, upper=via / "upper", work=via / "work")
        _mount("overlay", target, "overlay", 0, options)
    finally:
        os.close(fd)
    return target


def unmount_rootfs(sandbox_dir: Path) -> None:
    """Unmount the sandbox's overlay; a no-op if it is not mounted."""
    unmount(rootfs_dir(Path(sandbox_dir).absolute()))


def unmount(target: Path) -> None:
    """Unmount ``target`` (every mount stacked there); a no-op if it is not a mount point.

    A busy mount (a straggling process still holds a file) is detached lazily rather than
    left behind: the kernel frees it when the last user goes.
    """
    target = Path(target).absolute()
    while is_mounted(target):
        try:
            _umount(target, 0)
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                _umount(target, MNT_DETACH)
            elif exc.errno == errno.EINVAL:
                return  # raced with another unmount: it is no longer a mount point
            else:
                raise from_os_error(exc, str(target)) from exc


def remove_rootfs(sandbox_dir: Path) -> None:
    """Unmount the overlay and delete its upper, work and mount-point directories.

    A ``layer`` that is still a mount point (the sandbox's disk) is refused: unmount it
    first (``disk.remove_disk``).
    """
    sandbox_dir = Path(sandbox_dir).absolute()
    unmount_rootfs(sandbox_dir)
    for name in ("rootfs", "layer", "upper", "work"):
        path = sandbox_dir / name
        if is_mounted(path):
            # Never recurse into a mounted tree: that would delete the template's files.
            raise HutchError(f"refusing to delete {path}: it is still a mount point")
        try:
            shutil.rmtree(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise from_os_error(exc, str(path)) from exc


def find_mounts_under(prefix: Path) -> list[Path]:
    """Mount points at or below ``prefix`` in this mount namespace, deepest first."""
    prefix = Path(prefix).absolute()
    found = [p for p in _mount_points() if p == prefix or prefix in p.parents]
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def is_mounted(path: Path) -> bool:
    """Whether ``path`` is a mount point in this mount namespace."""
    return Path(path).absolute() in set(_mount_points())


def _mount_points() -> list[Path]:
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        return [Path(_unescape(line.split(" ", 5)[4])) for line in f if line.strip()]


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        chunk = field[i + 1 : i + 4]
        if field[i] == "\\" and len(chunk) == 3 and chunk.isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_fs(source: str, target: Path, fstype: str, flags: int, options: str) -> None:
    """mount(2) ``source`` of ``fstype`` at ``target``; ``HutchError`` on failure."""
    _mount(source, target, fstype, flags, options)


def _mount(source: str, target: Path, fstype: str, flags: int, options: str) -> None:
    rc = _libc.mount(source.encode(), os.fsencode(target), fstype.encode(), flags, options.encode())
    if rc != 0:
        err = ctypes.get_errno()
        raise from_os_error(OSError(err, os.strerror(err)), f"mount {fstype} at {target}")


def _umount(target: Path, flags: int) -> None:
    if _libc.umount2(os.fsencode(target), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(target))
