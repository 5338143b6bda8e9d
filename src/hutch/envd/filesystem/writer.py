"""Atomic file writes for uploads: a temporary file in the target directory, renamed into place.

Why a temporary file *in the target directory*: ``rename`` is atomic only within one
filesystem, and the target directory is the one place certain to be on the destination's
filesystem. Readers therefore see the old file or the whole new one, never a partial write,
and a failed upload leaves nothing under the target name.

Ownership and mode: envd runs as root, so every created parent directory (0755) and the file
are chowned to the requesting user. A new file gets 0644 (what a umask of 022 gives); a file
that replaces another keeps the permission bits of the one it replaces, so an overwritten
script stays executable. Foreign ``user.*`` xattrs of the replaced file are copied over (they
would otherwise vanish with the old inode); ``user.e2b.*`` is replaced by the upload's set.

fsync policy: none. A sandbox's filesystem lives as long as the sandbox; pausing it goes
through a filesystem freeze/sync, and E2B's envd does not fsync either. Skipping it keeps
upload throughput close to ``cp`` (docs/envd/files.md).

Everything here is blocking; callers run it in a worker thread (``AtomicFile`` does), one
write behind the request (``WriteBehind``): the next megabyte is received while the previous
one is written, instead of the event loop idling in ``epoll`` for each write (ADR 35).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import os
import posixpath
import secrets
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import anyio.to_thread

from hutch.envd.filesystem.publications import Publication, Publications
from hutch.envd.users import User
from hutch.shared.errors import InvalidArgumentError, from_os_error
from hutch.shared.xattrs import XATTR_PREFIX, read_metadata, write_metadata

#: Marker in the names of envd's temporary upload files (``.<name>.hutch-upload-<token>``).
TEMP_MARKER = ".hutch-upload-"
#: Bytes buffered before one ``writev`` in a worker thread: large writes, few thread hops.
FLUSH_BYTES = 1 << 20
_MAX_IOV = 512  # below IOV_MAX (1024) with room to spare
_NEW_FILE_MODE = 0o644
_DIR_MODE = 0o755
_NAME_MAX = 255


@dataclass(frozen=True, kw_only=True)
class WrittenFile:
    """What an upload put on disk: the answer ``POST /files`` gives for each file."""

    path: str
    name: str
    metadata: dict[str, str]


@dataclass(kw_only=True)
class Target:
    """A validated destination: where the file goes and the directory it goes in."""

    path: str  # as the client named it (resolved); reported back
    real_path: str  # where the bytes go: symlinks at the final component followed
    directory: str
    user: User


def prepare_target(path: str, *, user: User) -> Target:
    """Validate ``path`` and create its missing parents, owned by ``user``.

    envd writes as root on the user's behalf, as E2B's envd does (ADR 12): ``user`` owns
    what is created; the kernel's own refusals (a read-only mount) still apply. Raises
    ``InvalidArgumentError`` when ``path`` is a directory or a parent is not one.
    """
    # A symlink at the final component is written through, like open(2) would (E2B's envd
    # opens the path); replacing the link itself would silently break it.
    real_path = os.path.realpath(path) if os.path.islink(path) else path
    if real_path in ("/", "") or os.path.isdir(real_path):
        raise InvalidArgumentError(f"{path}: is a directory")
    directory = posixpath.dirname(real_path) or "/"
    _make_parents(directory, user=user, what=path)
    return Target(path=path, real_path=real_path, directory=directory, user=user)


def _make_parents(directory: str, *, user: User, what: str) -> None:
    missing: list[str] = []
    current = directory
    while not os.path.isdir(current):
        if os.path.lexists(current) and not os.path.islink(current):
            raise InvalidArgumentError(f"{what}: {current} is not a directory")
        missing.append(current)
        parent = posixpath.dirname(current)
        if parent == current:
            break
        current = parent
    for d in reversed(missing):
        try:
            os.mkdir(d, _DIR_MODE)
        except FileExistsError:
            if os.path.isdir(d):
                continue  # created concurrently: fine
            raise InvalidArgumentError(f"{what}: {d} is not a directory") from None
        except OSError as exc:
            raise from_os_error(exc, what) from exc
        try:
            os.chown(d, user.uid, user.gid)
        except OSError as exc:
            raise from_os_error(exc, what) from exc


def temp_name(target: Target, token: str) -> str:
    """The hidden, recognisable temporary name for ``target`` (kept under NAME_MAX)."""
    suffix = TEMP_MARKER + token
    base = posixpath.basename(target.real_path)
    room = _NAME_MAX - len(suffix) - 1
    return posixpath.join(
        target.directory, "." + base.encode()[:room].decode(errors="ignore") + suffix
    )


def create_temp(target: Target, *, token: str | None = None) -> tuple[int, str]:
    """Create the temporary file for ``target``: (fd, path), 0600 and owned by the user.

    0600 while it is written, so nobody reads a half-written file under its hidden name.
    """
    temp = temp_name(target, token or secrets.token_hex(8))
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        fd = os.open(temp, flags, 0o600)
    except OSError as exc:
        raise from_os_error(exc, target.path) from exc
    try:
        os.fchown(fd, target.user.uid, target.user.gid)
    except OSError as exc:
        discard(fd, temp)
        raise from_os_error(exc, target.path) from exc
    return fd, temp


def write_buffers(
    fd: int, buffers: Sequence[bytes | memoryview], *, offset: int | None, what: str
) -> int:
    """Write all of ``buffers`` (at ``offset``, or at the file position); returns the bytes written.

    No joining: the buffers go to the kernel as an iovec, so nothing is copied.
    """
    pending = list(buffers)
    written_total = 0
    while pending:
        batch = pending[:_MAX_IOV]
        try:
            if offset is None:
                n = os.writev(fd, batch)
            else:
                n = os.pwritev(fd, batch, offset + written_total)
        except OSError as exc:
            raise from_os_error(exc, what) from exc
        if n == 0:
            raise from_os_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), what)
        written_total += n
        # Drop what was written; a short write (rare on regular files) resumes mid-buffer.
        while n and pending:
            size = len(pending[0])
            if n >= size:
                n -= size
                pending.pop(0)
            else:
                pending[0] = memoryview(pending[0])[n:]
                n = 0
    return written_total


class WriteBehind:
    """At most one blocking write in a worker thread while the caller receives the next bytes.

    The profile of a streamed upload (ADR 35) showed the event loop waiting for each write
    before it read the next chunk. ``submit`` waits for the previous write (surfacing its
    error), then starts this one and returns at once. ``wait`` settles the last one.

    Cancellation never abandons a running write: it is shielded, and ``after`` runs its
    cleanup (closing the descriptor) only once the thread is done with the descriptor, so a
    descriptor number can never be reused under a write still in flight.
    """

    def __init__(
        self,
        *,
        on_done: Callable[[], None] | None = None,
        executor: concurrent.futures.Executor | None = None,
    ) -> None:
        self._pending: asyncio.Future[int] | None = None
        self._on_done = on_done
        self._executor = executor  # None: the loop's default executor

    @property
    def busy(self) -> bool:
        """Whether a write is still running in its thread."""
        return self._pending is not None and not self._pending.done()

    async def submit(self, fn: Callable[[], int]) -> int:
        """Wait for the previous write, then start ``fn``; returns the previous one's bytes."""
        done = await self.wait()
        fut = asyncio.get_running_loop().run_in_executor(self._executor, fn)
        if self._on_done is not None:
            on_done = self._on_done
            fut.add_done_callback(lambda _f: on_done())
        self._pending = fut
        return done

    async def wait(self) -> int:
        """Bytes written by the pending write (0 when none); raises its error."""
        fut = self._pending
        if fut is None:
            return 0
        try:
            return await asyncio.shield(fut)
        finally:
            if fut.done():
                self._pending = None

    def after(self, cleanup: Callable[[], None]) -> None:
        """Run ``cleanup`` now, or when the write in flight ends (its error is dropped)."""
        fut = self._pending
        if fut is None or fut.done():
            if fut is not None and not fut.cancelled():
                fut.exception()  # retrieved: the error path that called us reports its own
            self._pending = None
            cleanup()
            return

        def _then(f: asyncio.Future[int]) -> None:
            if not f.cancelled():
                f.exception()
            cleanup()

        fut.add_done_callback(_then)


def _copy_foreign_xattrs(source: str, fd: int) -> None:
    try:
        names = os.listxattr(source)
    except OSError:
        return
    for name in names:
        if not name.startswith("user.") or name.startswith(XATTR_PREFIX):
            continue
        try:
            os.setxattr(fd, name, os.getxattr(source, name))
        except OSError:
            continue  # best effort: these are not ours to guarantee


def seal(fd: int, temp: str, target: Target, *, metadata: dict[str, str]) -> None:
    """Give the temp file its mode and metadata, and close it: all but the rename.

    Metadata is set on the temp file *before* the rename so content and metadata appear
    together. Consumes ``fd``; on failure the temp file is removed.
    """
    try:
        try:
            existing = os.stat(target.real_path)
        except FileNotFoundError:
            existing = None
        except OSError as exc:
            raise from_os_error(exc, target.path) from exc
        if existing is not None and stat.S_ISDIR(existing.st_mode):
            raise InvalidArgumentError(f"{target.path}: is a directory")
        mode = stat.S_IMODE(existing.st_mode) if existing is not None else _NEW_FILE_MODE
        try:
            os.fchmod(fd, mode)
        except OSError as exc:
            raise from_os_error(exc, target.path) from exc
        if existing is not None:
            _copy_foreign_xattrs(target.real_path, fd)
        write_metadata(fd, metadata, what=target.path)
        try:
            os.close(fd)
        except OSError as exc:  # NFS-like filesystems report deferred write errors here
            fd = -1
            raise from_os_error(exc, target.path) from exc
    except BaseException:
        discard(fd, temp)
        raise


def _note_publication(temp: str, target: Target, publications: Publications) -> None:
    """Tell the watchers what this rename stands for (``publications.py``)."""
    try:
        st = os.stat(temp)
        try:
            replaced = not stat.S_ISDIR(os.stat(target.real_path).st_mode)
        except FileNotFoundError:
            replaced = False
        metadata = bool(read_metadata(temp)) or (replaced and bool(read_metadata(target.real_path)))
    except OSError:
        return  # the rename below reports what is wrong
    publications.record(
        posixpath.basename(temp),
        Publication(
            replaced=replaced, wrote=st.st_size > 0, metadata=metadata, dev=st.st_dev, ino=st.st_ino
        ),
    )


def publish(temp: str, target: Target, *, publications: Publications | None = None) -> WrittenFile:
    """Rename a sealed temp file over the target; on failure the temp file is removed.

    ``publications`` learns what the rename stands for, so watchers show E2B's events.
    """
    if publications is not None:
        _note_publication(temp, target, publications)
    try:
        os.rename(temp, target.real_path)
    except OSError as exc:
        discard(-1, temp)
        raise from_os_error(exc, target.path) from exc
    return WrittenFile(
        path=target.path,
        name=posixpath.basename(target.path),
        metadata=read_metadata(target.real_path),
    )


def finalize(
    fd: int,
    temp: str,
    target: Target,
    *,
    metadata: dict[str, str],
    publications: Publications | None = None,
) -> WrittenFile:
    """``seal`` then ``publish``: the temp file becomes the target, metadata and all."""
    seal(fd, temp, target, metadata=metadata)
    return publish(temp, target, publications=publications)


def discard(fd: int, temp: str) -> None:
    """Close ``fd`` (when >= 0) and remove ``temp``; never raises (it runs on error paths)."""
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(temp)


@dataclass(kw_only=True)
class AtomicFile:
    """One streamed upload: ``feed`` bytes, ``flush`` when asked, then ``commit`` or ``discard``.

    Blocking work runs in a worker thread so the event loop keeps serving; writes are
    batched (``FLUSH_BYTES``) to keep per-chunk overhead off the hot path, and run one
    behind the request (``WriteBehind``) so receiving and writing overlap.
    """

    target: Target
    metadata: dict[str, str]
    fd: int
    temp: str
    size: int = 0
    publications: Publications | None = None
    _buffers: list[bytes | memoryview] = field(default_factory=list)
    _buffered: int = 0
    _done: bool = False
    _behind: WriteBehind = field(default_factory=WriteBehind)

    @classmethod
    async def create(
        cls,
        path: str,
        *,
        user: User,
        metadata: dict[str, str],
        publications: Publications | None = None,
    ) -> AtomicFile:
        """Validate ``path`` for ``user``, create parents and the temporary file."""

        def _open() -> AtomicFile:
            target = prepare_target(path, user=user)
            fd, temp = create_temp(target)
            return cls(
                target=target, metadata=metadata, fd=fd, temp=temp, publications=publications
            )

        return await anyio.to_thread.run_sync(_open)

    def feed(self, data: bytes | memoryview) -> bool:
        """Buffer ``data`` (kept by reference); True when it is time to ``flush``."""
        if data:
            self._buffers.append(data)
            self._buffered += len(data)
        return self._buffered >= FLUSH_BYTES or len(self._buffers) >= _MAX_IOV

    async def flush(self) -> None:
        """Start writing what is buffered in a worker thread (after the previous write)."""
        if not self._buffers:
            return
        buffers, self._buffers, self._buffered = self._buffers, [], 0
        self.size += await self._behind.submit(lambda: self._write(buffers))

    def _write(self, buffers: list[bytes | memoryview]) -> int:
        return write_buffers(self.fd, buffers, offset=None, what=self.target.path)

    async def seal(self) -> None:
        """Flush, set mode and metadata, close: ready for ``publish``, not yet visible."""
        try:
            await self.flush()
            self.size += await self._behind.wait()
        except BaseException:
            self.discard()
            raise
        # ``seal`` owns the descriptor from here (and removes the temp file on failure):
        # forget it first so no error path can close a number another thread reused.
        fd, self.fd = self.fd, -1
        await anyio.to_thread.run_sync(
            lambda: seal(fd, self.temp, self.target, metadata=self.metadata)
        )

    def publish(self) -> WrittenFile:
        """Rename into place (blocking; run in a worker thread)."""
        self._done = True
        return publish(self.temp, self.target, publications=self.publications)

    async def commit(self) -> WrittenFile:
        """``seal`` then ``publish``."""
        await self.seal()
        return await anyio.to_thread.run_sync(self.publish)

    def discard(self) -> None:
        """Drop the upload (idempotent, synchronous so it also runs under cancellation)."""
        if self._done:
            return
        self._done = True
        fd, temp, self.fd = self.fd, self.temp, -1
        # A write still in its thread keeps the descriptor until it returns.
        self._behind.after(lambda: discard(fd, temp))
