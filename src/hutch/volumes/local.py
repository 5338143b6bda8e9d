"""The local backend: one loop-mounted ext4 image per volume (ADR 0008).

Layout under ``root`` (``<home>/volumes``): ``images/<id>.ext4`` (the image, allocated in
full with ``posix_fallocate`` so that a full host disk can never make a volume fail below
its quota) and ``mnt/<id>`` (where it is mounted, ``nosuid,nodev``, on first use). The quota
is the image's size: ext4 itself answers ENOSPC, to the content API and to sandboxes alike.

Every content operation starts from an ``O_PATH`` fd of the mount and resolves the rest with
``openat2(RESOLVE_BENEATH)`` (``safefs.py``); changes are made through fds or ``*at`` calls
on the final component without following it, so neither a ``..``, an absolute or climbing
symlink, nor a symlink swapped in by a sandbox between two calls can reach outside.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import secrets
import shutil
import stat
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, TypeVar

from hutch.shared.errors import (
    AlreadyExistsError,
    ConflictError,
    HutchError,
    InsufficientStorageError,
    InvalidArgumentError,
    NotFoundError,
    from_os_error,
)
from hutch.shared.xattrs import read_metadata, write_metadata
from hutch.volumes.base import (
    EntryStat,
    EntryType,
    Owner,
    Usage,
    display_path,
    split_parent,
)
from hutch.volumes.safefs import O_PATH, open_beneath

log = logging.getLogger("hutch.volumes")

#: Prefix of the temporary files of uploads in progress (hidden from listings).
UPLOAD_PREFIX: Final = ".hutch-upload-"
#: How much an upload buffers before one write(2) (and a read chunk).
CHUNK: Final = 1 << 20
#: What a new volume's root, and entries created without an owner, belong to: E2B's
#: ``user`` (uid/gid 1000 in the ``base`` template).
DEFAULT_UID: Final = 1000
DEFAULT_GID: Final = 1000

T = TypeVar("T")


def _ts(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _type(mode: int) -> EntryType:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "unknown"


def _translate(exc: OSError, rel: str) -> HutchError:
    shown = display_path(rel)
    if exc.errno == errno.EXDEV:
        return InvalidArgumentError(f"{shown}: the path leads outside the volume")
    if exc.errno == errno.ELOOP:
        return InvalidArgumentError(
            f"{shown}: too many symlinks, or a symlink where none is allowed"
        )
    if exc.errno == errno.ENOENT:
        return NotFoundError(
            f"{shown}: no such file or directory", public_message=f"Path {shown} not found"
        )
    return from_os_error(exc, shown)


def _check_mode(mode: int | None) -> int | None:
    if mode is None:
        return None
    if mode < 0 or mode > 0o1777:
        raise InvalidArgumentError(f"mode {mode:o}: only permission bits and sticky are allowed")
    return mode


class _LocalFile:
    """An open regular file of a volume, read with ``pread`` in a worker thread."""

    def __init__(self, fd: int, size: int) -> None:
        self._fd = fd
        self.size = size

    async def chunks(self, start: int, end: int) -> AsyncIterator[bytes]:
        pos = start
        while pos < end:
            data = await asyncio.to_thread(os.pread, self._fd, min(CHUNK, end - pos), pos)
            if not data:
                return
            pos += len(data)
            yield data

    async def aclose(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class LocalVolumeBackend:
    """:class:`~hutch.volumes.base.VolumeBackend` on loop-mounted ext4 images."""

    name = "local"
    mountable = True

    def __init__(
        self,
        root: Path,
        *,
        default_uid: int = DEFAULT_UID,
        default_gid: int = DEFAULT_GID,
        reserve_bytes: int = 1 << 30,
    ) -> None:
        self.root = Path(root)
        self.default_uid = default_uid
        self.default_gid = default_gid
        #: Free space on the host filesystem that no new volume may take.
        self.reserve_bytes = reserve_bytes
        self._locks: dict[str, asyncio.Lock] = {}

    # -- paths and mounts -------------------------------------------------------------

    def image_path(self, volume_id: str) -> Path:
        return self.root / "images" / f"{volume_id}.ext4"

    def mount_path(self, volume_id: str) -> Path:
        """Where the volume is mounted on the host (the source of sandboxes' bind mounts)."""
        return self.root / "mnt" / volume_id

    def _lock(self, volume_id: str) -> asyncio.Lock:
        return self._locks.setdefault(volume_id, asyncio.Lock())

    async def _run(self, *argv: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise HutchError(
                f"{argv[0]} failed ({proc.returncode}): {err.decode(errors='replace').strip()}"
            )

    async def ensure_mounted(self, volume_id: str) -> Path:
        """Mount the volume's image if it is not (idempotent); its host path."""
        mnt = self.mount_path(volume_id)
        if os.path.ismount(mnt):
            return mnt
        async with self._lock(volume_id):
            if os.path.ismount(mnt):
                return mnt
            image = self.image_path(volume_id)
            if not image.exists():
                raise NotFoundError(f"volume {volume_id}: no image at {image}")
            mnt.mkdir(parents=True, exist_ok=True)
            # mount(8) reuses the loop device already backing this image, if any (a
            # sandbox still holding it after a restart), so there is one superblock.
            await self._run(
                "mount", "-t", "ext4", "-o", "loop,nosuid,nodev,noatime", str(image), str(mnt)
            )
        return mnt

    async def host_path(self, volume_id: str) -> str:
        """The mount on the host: sandboxes bind-mount it (one superblock for all)."""
        return str(await self.ensure_mounted(volume_id))

    async def unmount(self, volume_id: str) -> None:
        """Unmount the host mount (bind mounts in sandboxes keep the filesystem alive)."""
        mnt = self.mount_path(volume_id)
        async with self._lock(volume_id):
            if os.path.ismount(mnt):
                await self._run("umount", str(mnt))

    def mounted(self) -> list[str]:
        """The volumes mounted on the host now."""
        base = self.root / "mnt"
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if os.path.ismount(p))

    async def aclose(self) -> None:
        """Unmount every host mount (images and data stay)."""
        for vid in self.mounted():
            try:
                await self.unmount(vid)
            except HutchError as exc:
                log.warning("volume %s: unmount failed: %s", vid, exc.message)

    # -- lifecycle ----------------------------------------------------------------------

    async def capacity_bytes(self) -> int:
        (self.root / "images").mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.root / "images").free
        return max(0, free - self.reserve_bytes)

    async def create(self, volume_id: str, *, quota_bytes: int) -> None:
        image = self.image_path(volume_id)
        image.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(image, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError as exc:
            raise AlreadyExistsError(f"volume {volume_id}: image exists") from exc
        try:
            try:
                os.posix_fallocate(fd, 0, quota_bytes)
            finally:
                os.close(fd)
            await self._run(
                "mkfs.ext4",
                "-q",
                "-F",
                "-m",
                "0",
                "-E",
                f"nodiscard,root_owner={self.default_uid}:{self.default_gid}",
                str(image),
            )
            mnt = await self.ensure_mounted(volume_id)
            with contextlib.suppress(OSError):
                os.rmdir(mnt / "lost+found")  # e2fsck recreates it if it ever needs it
        except OSError as exc:
            await self._discard(volume_id)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise InsufficientStorageError(f"volume {volume_id}: host disk full") from exc
            raise from_os_error(exc, str(image)) from exc
        except BaseException:
            await self._discard(volume_id)
            raise

    async def _discard(self, volume_id: str) -> None:
        with contextlib.suppress(HutchError):
            await self.unmount(volume_id)
        self.image_path(volume_id).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.mount_path(volume_id).rmdir()

    async def delete(self, volume_id: str) -> None:
        mnt = self.mount_path(volume_id)
        if os.path.ismount(mnt):
            try:
                await self.unmount(volume_id)
            except HutchError as exc:
                raise ConflictError(f"volume {volume_id} is busy: {exc.message}") from exc
        self.image_path(volume_id).unlink(missing_ok=True)
        with contextlib.suppress(FileNotFoundError):
            mnt.rmdir()
        self._locks.pop(volume_id, None)

    async def usage(self, volume_id: str) -> Usage:
        mnt = await self.ensure_mounted(volume_id)
        st = os.statvfs(mnt)
        return Usage(
            used_bytes=(st.f_blocks - st.f_bfree) * st.f_frsize,
            total_bytes=st.f_blocks * st.f_frsize,
        )

    # -- content ------------------------------------------------------------------------

    async def _in_volume(self, volume_id: str, rel: str, fn: Callable[[int], T]) -> T:
        """``fn(root_fd)`` in a worker thread, ``OSError`` translated about ``rel``."""
        mnt = await self.ensure_mounted(volume_id)

        def call() -> T:
            root = os.open(mnt, O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                return fn(root)
            except OSError as exc:
                raise _translate(exc, rel) from exc
            finally:
                os.close(root)

        return await asyncio.to_thread(call)

    def _entry(self, dirfd: int, name: str, rel: str) -> EntryStat:
        st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
        kind = _type(st.st_mode)
        target = os.readlink(name, dir_fd=dirfd) if kind == "symlink" else None
        metadata = read_metadata(f"/proc/self/fd/{dirfd}/{name}") if kind == "file" else {}
        return EntryStat(
            name=name or "/",
            type=kind,
            path=display_path(rel),
            size=st.st_size,
            mode=stat.S_IMODE(st.st_mode),
            uid=st.st_uid,
            gid=st.st_gid,
            atime=_ts(st.st_atime),
            mtime=_ts(st.st_mtime),
            ctime=_ts(st.st_ctime),
            target=target,
            metadata=metadata,
        )

    def _stat_at(self, root: int, rel: str) -> EntryStat:
        if not rel:
            return self._root_entry(root)
        parent, name = split_parent(rel)
        pfd = open_beneath(root, parent, O_PATH | os.O_DIRECTORY)
        try:
            return self._entry(pfd, name, rel)
        finally:
            os.close(pfd)

    def _root_entry(self, root: int) -> EntryStat:
        st = os.fstat(root)
        return EntryStat(
            name="/",
            type="directory",
            path="/",
            size=st.st_size,
            mode=stat.S_IMODE(st.st_mode),
            uid=st.st_uid,
            gid=st.st_gid,
            atime=_ts(st.st_atime),
            mtime=_ts(st.st_mtime),
            ctime=_ts(st.st_ctime),
        )

    async def stat(self, volume_id: str, rel: str) -> EntryStat:
        return await self._in_volume(volume_id, rel, lambda root: self._stat_at(root, rel))

    async def list_dir(self, volume_id: str, rel: str, *, depth: int) -> list[EntryStat]:
        if depth < 1:
            raise InvalidArgumentError(f"depth {depth}: must be at least 1")

        def walk(dfd: int, base: str, level: int, out: list[EntryStat]) -> None:
            for name in sorted(os.listdir(dfd)):
                if name.startswith(UPLOAD_PREFIX):
                    continue
                child = f"{base}/{name}" if base else name
                entry = self._entry(dfd, name, child)
                out.append(entry)
                if entry.type == "directory" and level < depth:
                    sub = os.open(
                        name,
                        os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                        dir_fd=dfd,
                    )
                    try:
                        walk(sub, child, level + 1, out)
                    finally:
                        os.close(sub)

        def run(root: int) -> list[EntryStat]:
            dfd = open_beneath(root, rel, os.O_RDONLY | os.O_DIRECTORY)
            try:
                out: list[EntryStat] = []
                walk(dfd, rel, 1, out)
                return out
            finally:
                os.close(dfd)

        return await self._in_volume(volume_id, rel, run)

    def _apply_owner(self, fd: int, owner: Owner, *, default_mode: int) -> None:
        uid = self.default_uid if owner.uid is None else owner.uid
        gid = self.default_gid if owner.gid is None else owner.gid
        os.fchown(fd, uid, gid)
        os.fchmod(fd, default_mode if owner.mode is None else owner.mode)

    def _mkdirs(self, root: int, rel: str, owner: Owner, *, parents: bool) -> bool:
        """Create ``rel`` (and its parents with ``parents``); False if it already existed."""
        parts = rel.split("/")
        created = False
        for i in range(1 if parents else len(parts), len(parts) + 1):
            prefix = "/".join(parts[:i])
            parent, name = split_parent(prefix)
            pfd = open_beneath(root, parent, O_PATH | os.O_DIRECTORY)
            try:
                try:
                    os.mkdir(name, 0o700, dir_fd=pfd)
                except FileExistsError:
                    if prefix == rel and not parents:
                        raise
                    continue
                fd = os.open(
                    name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd
                )
                try:
                    self._apply_owner(fd, owner if prefix == rel else Owner(), default_mode=0o755)
                finally:
                    os.close(fd)
                created = created or prefix == rel
            finally:
                os.close(pfd)
        return created

    async def make_dir(self, volume_id: str, rel: str, *, owner: Owner, parents: bool) -> EntryStat:
        split_parent(rel)
        _check_mode(owner.mode)

        def run(root: int) -> EntryStat:
            if not parents:
                parent, _ = split_parent(rel)
                os.close(open_beneath(root, parent, O_PATH | os.O_DIRECTORY))
            try:
                self._mkdirs(root, rel, owner, parents=parents)
            except FileExistsError as exc:
                raise AlreadyExistsError(f"{display_path(rel)} already exists") from exc
            entry = self._stat_at(root, rel)
            if entry.type != "directory":
                raise AlreadyExistsError(f"{display_path(rel)} exists and is not a directory")
            return entry

        return await self._in_volume(volume_id, rel, run)

    async def write_file(
        self,
        volume_id: str,
        rel: str,
        chunks: AsyncIterable[bytes],
        *,
        owner: Owner,
        metadata: Mapping[str, str],
    ) -> EntryStat:
        parent, name = split_parent(rel)
        _check_mode(owner.mode)

        def open_temp(root: int) -> tuple[int, int, str]:
            if parent:
                self._mkdirs(root, parent, Owner(), parents=True)
            pfd = open_beneath(root, parent, O_PATH | os.O_DIRECTORY)
            try:
                try:
                    st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
                except FileNotFoundError:
                    pass
                else:
                    if stat.S_ISDIR(st.st_mode):
                        raise InvalidArgumentError(f"{display_path(rel)} is a directory")
                tmp = UPLOAD_PREFIX + secrets.token_hex(8)
                fd = os.open(
                    tmp,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o600,
                    dir_fd=pfd,
                )
            except BaseException:
                os.close(pfd)
                raise
            return pfd, fd, tmp

        pfd, fd, tmp = await self._in_volume(volume_id, rel, open_temp)
        done = False
        try:
            buf = bytearray()
            async for chunk in chunks:
                buf += chunk
                if len(buf) >= CHUNK:
                    await self._write(fd, bytes(buf), rel)
                    buf.clear()
            if buf:
                await self._write(fd, bytes(buf), rel)

            def finish() -> None:
                try:
                    write_metadata(fd, metadata, what=display_path(rel))
                    self._apply_owner(fd, owner, default_mode=0o644)
                    os.fsync(fd)
                    os.rename(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)
                except OSError as exc:
                    raise _space_or(exc, rel) from exc

            await asyncio.to_thread(finish)
            done = True
        finally:
            os.close(fd)
            if not done:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=pfd)
            os.close(pfd)
        return await self.stat(volume_id, rel)

    async def _write(self, fd: int, data: bytes, rel: str) -> None:
        def run() -> None:
            view = memoryview(data)
            try:
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
            except OSError as exc:
                raise _space_or(exc, rel) from exc

        await asyncio.to_thread(run)

    async def open_file(self, volume_id: str, rel: str) -> _LocalFile:
        def run(root: int) -> _LocalFile:
            fd = open_beneath(root, rel, os.O_RDONLY | os.O_NONBLOCK)
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                os.close(fd)
                raise InvalidArgumentError(f"{display_path(rel)} is not a regular file")
            return _LocalFile(fd, st.st_size)

        return await self._in_volume(volume_id, rel, run)

    async def remove(self, volume_id: str, rel: str) -> None:
        parent, name = split_parent(rel)

        def run(root: int) -> None:
            pfd = open_beneath(root, parent, O_PATH | os.O_DIRECTORY)
            try:
                st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    shutil.rmtree(name, dir_fd=pfd)  # fd-based: never follows a symlink
                else:
                    os.unlink(name, dir_fd=pfd)
            finally:
                os.close(pfd)

        await self._in_volume(volume_id, rel, run)

    async def move(self, volume_id: str, src: str, dst: str) -> EntryStat:
        sparent, sname = split_parent(src)
        dparent, dname = split_parent(dst)
        if dst == src or dst.startswith(src + "/"):
            raise InvalidArgumentError(f"cannot move {display_path(src)} into itself")

        def run(root: int) -> EntryStat:
            sfd = open_beneath(root, sparent, O_PATH | os.O_DIRECTORY)
            try:
                dfd = open_beneath(root, dparent, O_PATH | os.O_DIRECTORY)
                try:
                    os.stat(sname, dir_fd=sfd, follow_symlinks=False)
                    try:
                        os.stat(dname, dir_fd=dfd, follow_symlinks=False)
                    except FileNotFoundError:
                        pass
                    else:
                        raise AlreadyExistsError(f"{display_path(dst)} already exists")
                    os.rename(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd)
                    return self._entry(dfd, dname, dst)
                finally:
                    os.close(dfd)
            finally:
                os.close(sfd)

        return await self._in_volume(volume_id, src, run)

    async def set_attrs(self, volume_id: str, rel: str, *, owner: Owner) -> EntryStat:
        _check_mode(owner.mode)

        def run(root: int) -> EntryStat:
            try:
                fd = open_beneath(root, rel, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise InvalidArgumentError(f"{display_path(rel)} is a symlink") from exc
                raise
            try:
                st = os.fstat(fd)
                uid = st.st_uid if owner.uid is None else owner.uid
                gid = st.st_gid if owner.gid is None else owner.gid
                os.fchown(fd, uid, gid)
                if owner.mode is not None:
                    os.fchmod(fd, owner.mode)
            finally:
                os.close(fd)
            return self._stat_at(root, rel)

        return await self._in_volume(volume_id, rel, run)


def _space_or(exc: OSError, rel: str) -> HutchError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return InsufficientStorageError(
            f"{display_path(rel)}: the volume is full",
            public_message="Volume quota exceeded: not enough space left in the volume",
        )
    return _translate(exc, rel)
