"""A sandbox's disk: the hard limit on what it can write (ADR 0023).

Each sandbox's writable layer lives on its own ext4 filesystem, in an image file allocated
in full (``posix_fallocate``) and loop-mounted::

    <sandbox_dir>/disk.ext4        the image: exactly the sandbox's disk size on the host
    <sandbox_dir>/layer/           its ext4 mount (loop device, autoclear, direct I/O)
    <sandbox_dir>/layer/upper      the overlay's upper directory (everything it writes)
    <sandbox_dir>/layer/work       overlayfs' scratch directory (same filesystem)

ext4 answers ENOSPC inside the sandbox at the limit, and nothing a sandbox does reaches the
node's own disk: the image's blocks were reserved when it was made. ``df /`` in the
sandbox shows this filesystem (overlayfs reports its upper's ``statfs``).

The loop device is configured with ``LOOP_CONFIGURE`` and ``LO_FLAGS_AUTOCLEAR`` through
ioctls (no ``losetup``): it detaches itself when the filesystem is unmounted, and a failed
mount leaves none behind (the device is cleared when our descriptor closes). Direct I/O
keeps the image's pages out of the host's page cache (the sandbox's filesystem caches them
once, charged to its memory cgroup). Only ``mkfs.ext4`` is a child process.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import subprocess
import threading
from pathlib import Path
from typing import Final

from hutch.node import rootfs as mounts
from hutch.node.usage import free_bytes
from hutch.shared.errors import HutchError, InsufficientStorageError, from_os_error

IMAGE: Final = "disk.ext4"
LAYER: Final = "layer"

_LOOP_CTL_GET_FREE: Final = 0x4C82
_LOOP_CONFIGURE: Final = 0x4C0A
_LO_FLAGS_AUTOCLEAR: Final = 4
_LO_FLAGS_DIRECT_IO: Final = 16
_MS_NOATIME: Final = 1024
#: A free loop device may be taken by someone else between GET_FREE and CONFIGURE.
_ATTACH_TRIES: Final = 8
#: ``mkfs.ext4``: no reserved blocks (a sandbox is its only user), 4 KiB blocks whatever
#: the size, inode tables and journal left unzeroed (the fallocated image reads as zeros)
#: and, with ``noinit_itable`` at mount, no background zeroing thread after it.
_MKFS: Final = (
    "mkfs.ext4", "-q", "-F", "-m", "0", "-b", "4096",
    "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard",
)  # fmt: skip
_MOUNT_OPTIONS: Final = "noinit_itable"
#: What a disk image must leave free on the node's filesystem: the node's own writes
#: (sandbox directories, its database, logs) must not be the ones to meet ENOSPC when a
#: burst of creates allocates the last of it (they would fail as 500s, not as a refusal).
RESERVE_BYTES: Final = 1 << 30
#: The room check and the allocation are one step: concurrent creates cannot each see the
#: same free space and together take the reserve.
_ALLOCATE = threading.Lock()


class _LoopInfo64(ctypes.Structure):
    _fields_ = [
        ("lo_device", ctypes.c_uint64),
        ("lo_inode", ctypes.c_uint64),
        ("lo_rdevice", ctypes.c_uint64),
        ("lo_offset", ctypes.c_uint64),
        ("lo_sizelimit", ctypes.c_uint64),
        ("lo_number", ctypes.c_uint32),
        ("lo_encrypt_type", ctypes.c_uint32),
        ("lo_encrypt_key_size", ctypes.c_uint32),
        ("lo_flags", ctypes.c_uint32),
        ("lo_file_name", ctypes.c_char * 64),
        ("lo_crypt_name", ctypes.c_char * 64),
        ("lo_encrypt_key", ctypes.c_char * 32),
        ("lo_init", ctypes.c_uint64 * 2),
    ]


class _LoopConfig(ctypes.Structure):
    _fields_ = [
        ("fd", ctypes.c_uint32),
        ("block_size", ctypes.c_uint32),
        ("info", _LoopInfo64),
        ("reserved", ctypes.c_uint64 * 8),
    ]


def layer_dir(sandbox_dir: Path) -> Path:
    """Where the sandbox's disk is mounted."""
    return Path(sandbox_dir) / LAYER


def image_path(sandbox_dir: Path) -> Path:
    """The sandbox's disk image."""
    return Path(sandbox_dir) / IMAGE


def create_disk(sandbox_dir: Path, *, size_mb: int) -> Path:
    """Make and mount the sandbox's disk of ``size_mb`` MiB; return the mount point.

    Raises ``InsufficientStorageError`` when the host cannot hold the image (nothing is
    left behind then), ``HutchError`` when ``mkfs.ext4`` or the mount fails.
    """
    image = image_path(sandbox_dir)
    try:
        fd = os.open(image, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise from_os_error(exc, str(image)) from exc
    try:
        try:
            with _ALLOCATE:
                if free_bytes(image.parent) < (size_mb << 20) + RESERVE_BYTES:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(image))
                os.posix_fallocate(fd, 0, size_mb << 20)
        finally:
            os.close(fd)
        done = subprocess.run([*_MKFS, str(image)], capture_output=True, check=False)
        if done.returncode != 0:
            err = done.stderr.decode(errors="replace").strip()
            raise HutchError(f"mkfs.ext4 {image} failed ({done.returncode}): {err}")
        return attach_disk(sandbox_dir)
    except OSError as exc:
        image.unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InsufficientStorageError(
                f"no room on the node for a {size_mb} MiB sandbox disk",
                public_message="the node has no disk space left for this sandbox",
            ) from exc
        raise from_os_error(exc, str(image)) from exc
    except BaseException:
        image.unlink(missing_ok=True)
        raise


def attach_disk(sandbox_dir: Path) -> Path:
    """Mount the sandbox's existing image at ``layer/`` (idempotent); the mount point."""
    target = layer_dir(sandbox_dir)
    if mounts.is_mounted(target):
        return target
    target.mkdir(mode=0o700, exist_ok=True)
    loop_fd, device = _attach_loop(image_path(sandbox_dir))
    try:
        mounts.mount_fs(device, target, "ext4", _MS_NOATIME, _MOUNT_OPTIONS)
    finally:
        os.close(loop_fd)  # autoclear: the mount now holds the device, or nothing does
    return target


def detach_disk(sandbox_dir: Path) -> None:
    """Unmount the sandbox's disk (the loop device goes with it); a no-op if not mounted."""
    mounts.unmount(layer_dir(sandbox_dir))


def remove_disk(sandbox_dir: Path) -> None:
    """Unmount the disk and delete its image; a no-op for what is not there."""
    detach_disk(sandbox_dir)
    target = layer_dir(sandbox_dir)
    if mounts.is_mounted(target):
        raise HutchError(f"refusing to delete {target}: it is still a mount point")
    if has_disk(sandbox_dir):
        # The mount point only: a ``layer/`` with files in it is a plain directory (no
        # disk), which ``rootfs.remove_rootfs`` deletes.
        with contextlib.suppress(FileNotFoundError, OSError):
            target.rmdir()
    image_path(sandbox_dir).unlink(missing_ok=True)


def has_disk(sandbox_dir: Path) -> bool:
    """Whether the sandbox has a disk image (mounted or not)."""
    return image_path(sandbox_dir).is_file()


def loop_devices_under(prefix: Path) -> list[str]:
    """Loop devices whose backing file is at or below ``prefix`` (leak checks, reconcile)."""
    prefix = Path(prefix).absolute()
    found = []
    for entry in Path("/sys/block").glob("loop*"):
        try:
            backing = (entry / "loop" / "backing_file").read_text().strip()
        except OSError:
            continue
        path = Path(backing.removesuffix(" (deleted)"))
        if path == prefix or prefix in path.parents:
            found.append(f"/dev/{entry.name}")
    return sorted(found)


def _attach_loop(image: Path) -> tuple[int, str]:
    """A free loop device backed by ``image`` (autoclear, direct I/O): ``(fd, path)``."""
    backing = os.open(image, os.O_RDWR | os.O_CLOEXEC)
    try:
        control = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
        try:
            for _ in range(_ATTACH_TRIES):
                number = fcntl.ioctl(control, _LOOP_CTL_GET_FREE)
                device = f"/dev/loop{number}"
                loop_fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
                config = _LoopConfig(fd=backing, block_size=0)
                config.info.lo_flags = _LO_FLAGS_AUTOCLEAR | _LO_FLAGS_DIRECT_IO
                config.info.lo_file_name = os.fsencode(image)[-63:]
                try:
                    fcntl.ioctl(loop_fd, _LOOP_CONFIGURE, config)
                except OSError as exc:
                    os.close(loop_fd)
                    if exc.errno == errno.EBUSY:
                        continue  # taken meanwhile by someone else: ask for another
                    raise
                return loop_fd, device
            raise HutchError(f"no free loop device for {image} after {_ATTACH_TRIES} tries")
        finally:
            os.close(control)
    finally:
        os.close(backing)  # the loop device holds its own reference to the file
