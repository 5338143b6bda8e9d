"""S3-style multipart upload sessions (E2B infra PR 1801): init, parts, complete, abort.

A session owns one temporary file next to its destination, preallocated to the total size.
Each part is written at ``part * part_size`` with ``pwritev``; parts are received in
parallel, and their writes go, in the order they are ready, to the session's one writer
thread. The kernel serialises buffered writes to one file anyway (the inode's lock, held
for the whole copy); with a thread per part the waiting writers spun on that lock, up to a
fifth of envd's cycles when the page cache was slow (ADR 36 addendum 3), while one writer
thread queues them asleep. A count of writes in flight is what ``complete`` and ``abort``
wait for before they close the file.

Lifecycle: OPEN -> COMPLETING -> DONE, or OPEN -> ABORTED. Finished sessions stay as
tombstones until they expire, so a late part or a second ``complete`` gets a clear 409
instead of a 404 that depends on timing. Sessions idle for ``upload_session_ttl_s`` are
aborted by a background sweep.

Crash safety: each session's temp path is recorded in ``<state_dir>/uploads/<token>`` before
the file is created; at start, every recorded file whose name still carries that session's
random token is removed. Files envd did not create are never touched.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import errno
import logging
import os
import posixpath
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio.to_thread

from hutch.envd.filesystem.publications import Publications
from hutch.envd.filesystem.writer import (
    FLUSH_BYTES,
    TEMP_MARKER,
    Target,
    WriteBehind,
    WrittenFile,
    create_temp,
    discard,
    finalize,
    prepare_target,
    temp_name,
    write_buffers,
)
from hutch.envd.settings import EnvdSettings
from hutch.envd.users import User
from hutch.shared.errors import (
    ConflictError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    from_os_error,
)

log = logging.getLogger("hutch.envd")

_MAX_LISTED_MISSING = 50


class SessionState(enum.Enum):
    OPEN = "open"
    COMPLETING = "completing"
    DONE = "completed"
    ABORTED = "aborted"


@dataclass(kw_only=True)
class UploadSession:
    """One multipart upload in progress."""

    upload_id: str
    target: Target
    total_size: int
    part_size: int
    num_parts: int
    metadata: dict[str, str]
    fd: int
    temp: str
    record: Path | None
    state: SessionState = SessionState.OPEN
    received: set[int] = field(default_factory=set)
    last_active: float = field(default_factory=time.monotonic)
    in_flight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    #: The session's one writer thread (started at the first write, ended with the session).
    writer: concurrent.futures.ThreadPoolExecutor = field(
        default_factory=lambda: concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="upload-writer"
        )
    )

    def part_length(self, part: int) -> int:
        """The exact size of ``part`` (the last one may be shorter)."""
        if part == self.num_parts - 1:
            return self.total_size - part * self.part_size
        return self.part_size

    def missing(self) -> list[int]:
        return [p for p in range(self.num_parts) if p not in self.received]


def _parse_id(upload_id: str) -> str:
    try:
        return str(uuid.UUID(upload_id))
    except ValueError:
        raise InvalidArgumentError(f"uploadId {upload_id[:64]!r} is not a UUID") from None


class UploadManager:
    """The open multipart upload sessions of one envd."""

    def __init__(self, *, settings: EnvdSettings, publications: Publications | None = None) -> None:
        self._settings = settings
        self._publications = publications
        self._sessions: dict[str, UploadSession] = {}
        self._records = Path(settings.state_dir) / "uploads"
        self._sweeper: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Remove temp files left by a previous run, then start the expiry sweep."""
        await anyio.to_thread.run_sync(self._remove_stale)
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="upload-sweeper")

    async def close(self) -> None:
        """Stop the sweep and abort every open session (their temp files are removed)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for session in list(self._sessions.values()):
            if session.state is SessionState.OPEN:
                await self._abort(session)

    def _remove_stale(self) -> None:
        try:
            self._records.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            log.warning("upload records unavailable (%s): stale temp files cannot be found", exc)
            return
        for record in self._records.iterdir():
            try:
                temp = record.read_text().strip()
            except OSError:
                temp = ""
            # Only a file whose name carries this record's random token is ours to remove.
            if temp.startswith("/") and posixpath.basename(temp).endswith(
                TEMP_MARKER + record.name
            ):
                with contextlib.suppress(OSError):
                    if not os.path.islink(temp) and os.path.isfile(temp):
                        os.unlink(temp)
                        log.info("removed stale upload temp file %s", temp)
            with contextlib.suppress(OSError):
                record.unlink()

    async def _sweep_forever(self) -> None:
        ttl = self._settings.upload_session_ttl_s
        interval = max(0.05, min(ttl / 4, 60.0))
        while True:
            await asyncio.sleep(interval)
            try:
                await self._sweep(ttl)
            except Exception:
                log.exception("upload session sweep failed")

    async def _sweep(self, ttl: float) -> None:
        now = time.monotonic()
        for session in list(self._sessions.values()):
            if now - session.last_active < ttl:
                continue
            if session.state is SessionState.OPEN and session.in_flight == 0:
                log.info("upload %s expired after %.0fs idle", session.upload_id, ttl)
                await self._abort(session)
                self._sessions.pop(session.upload_id, None)
            elif session.state in (SessionState.DONE, SessionState.ABORTED):
                self._sessions.pop(session.upload_id, None)  # tombstone expired

    # -- operations --------------------------------------------------------------------

    async def create(
        self,
        *,
        path: str,
        user: User,
        total_size: int,
        part_size: int,
        metadata: dict[str, str],
    ) -> UploadSession:
        """Reserve a session: limits, parents, and the preallocated temp file."""
        s = self._settings
        if total_size < 0:
            raise InvalidArgumentError("totalSize must not be negative")
        if total_size > s.max_upload_total_size:
            raise InvalidArgumentError(
                f"totalSize {total_size} exceeds the limit of {s.max_upload_total_size} bytes"
            )
        if part_size <= 0:
            raise InvalidArgumentError("partSize must be positive")
        if part_size > s.max_upload_part_size:
            raise InvalidArgumentError(
                f"partSize {part_size} exceeds the limit of {s.max_upload_part_size} bytes"
            )
        num_parts = -(-total_size // part_size)  # Python ints do not overflow
        if num_parts > s.max_upload_parts:
            raise InvalidArgumentError(
                f"{num_parts} parts exceed the limit of {s.max_upload_parts}; use a larger partSize"
            )
        if self.open_count() >= s.max_upload_sessions:
            raise ResourceExhaustedError(
                f"too many open upload sessions (limit {s.max_upload_sessions})"
            )
        upload_id = str(uuid.uuid4())
        # Reserve the slot before the first await so concurrent inits respect the limit.
        placeholder = _Reservation()
        self._sessions[upload_id] = placeholder  # type: ignore[assignment]
        try:
            session = await anyio.to_thread.run_sync(
                lambda: self._open_session(
                    upload_id=upload_id,
                    path=path,
                    user=user,
                    total_size=total_size,
                    part_size=part_size,
                    num_parts=num_parts,
                    metadata=metadata,
                )
            )
        except BaseException:
            self._sessions.pop(upload_id, None)
            raise
        self._sessions[upload_id] = session
        return session

    def _open_session(
        self,
        *,
        upload_id: str,
        path: str,
        user: User,
        total_size: int,
        part_size: int,
        num_parts: int,
        metadata: dict[str, str],
    ) -> UploadSession:
        target = prepare_target(path, user=user)
        token = secrets.token_hex(12)
        record: Path | None = self._records / token
        try:
            # Recorded before the file exists, so a crash at any point leaves it findable.
            record.write_text(temp_name(target, token))
        except OSError:
            record = None  # no state dir: still works, only crash cleanup is lost
        fd = -1
        temp = ""
        try:
            fd, temp = create_temp(target, token=token)
            if total_size:
                _preallocate(fd, total_size, what=path)
        except BaseException:
            if fd >= 0:
                discard(fd, temp)
            if record is not None:
                with contextlib.suppress(OSError):
                    record.unlink()
            raise
        return UploadSession(
            upload_id=upload_id,
            target=target,
            total_size=total_size,
            part_size=part_size,
            num_parts=num_parts,
            metadata=metadata,
            fd=fd,
            temp=temp,
            record=record,
        )

    def open_count(self) -> int:
        """Sessions counting against the limit (open, being completed, or being created)."""
        return sum(
            1
            for s in self._sessions.values()
            if isinstance(s, _Reservation)
            or s.state in (SessionState.OPEN, SessionState.COMPLETING)
        )

    def get(self, upload_id: str) -> UploadSession:
        """The session ``upload_id``: 400 when it is not a UUID, 404 when unknown."""
        session = self._sessions.get(_parse_id(upload_id))
        if session is None or isinstance(session, _Reservation):
            raise NotFoundError(f"upload {upload_id} not found (unknown or expired)")
        return session

    def _check_open(self, session: UploadSession) -> None:
        if session.state is not SessionState.OPEN:
            raise ConflictError(f"upload {session.upload_id} is {session.state.value}")

    async def write_part(
        self, upload_id: str, *, part: int, body: AsyncIterator[bytes], length: int | None
    ) -> int:
        """Write part ``part`` from ``body``, which must hold exactly the part's size.

        ``length`` is the declared body length when known (checked before reading). At most
        size + 1 bytes are consumed. Returns the part's size.
        """
        session = self.get(upload_id)
        self._check_open(session)
        if not 0 <= part < session.num_parts:
            raise InvalidArgumentError(
                f"part {part} out of range: this upload has parts 0..{session.num_parts - 1}"
            )
        expected = session.part_length(part)
        if length is not None and length != expected:
            raise InvalidArgumentError(f"part {part} must be {expected} bytes, got {length}")
        offset = part * session.part_size
        submitted = 0  # bytes handed to a write (the last may still be in its thread)
        buffers: list[bytes] = []
        buffered = 0
        behind = WriteBehind(on_done=lambda: self._write_done(session), executor=session.writer)
        session.last_active = time.monotonic()
        try:
            async for chunk in body:
                if not chunk:
                    continue
                if submitted + buffered + len(chunk) > expected:
                    raise InvalidArgumentError(f"part {part} is larger than {expected} bytes")
                buffers.append(chunk)
                buffered += len(chunk)
                if buffered >= FLUSH_BYTES:
                    await self._pwrite(session, behind, buffers, offset + submitted)
                    submitted += buffered
                    buffers, buffered = [], 0
            if submitted + buffered != expected:
                raise InvalidArgumentError(
                    f"part {part} must be {expected} bytes, got {submitted + buffered}"
                )
            if buffers:
                await self._pwrite(session, behind, buffers, offset + submitted)
            await behind.wait()
        finally:
            # On an error the write in flight still finishes (``in_flight`` covers it, so
            # complete and abort wait for it); its own error is dropped with this part.
            behind.after(lambda: None)
        self._check_open(session)
        session.received.add(part)
        session.last_active = time.monotonic()
        return expected

    async def _pwrite(
        self, session: UploadSession, behind: WriteBehind, buffers: list[bytes], offset: int
    ) -> None:
        # The state is checked between writes: once complete/abort has begun, a part still
        # streaming in stops at its next write with 409 instead of racing the rename.
        await behind.wait()
        self._check_open(session)
        session.in_flight += 1
        session.idle.clear()
        await behind.submit(
            lambda: write_buffers(session.fd, buffers, offset=offset, what=session.target.path)
        )

    @staticmethod
    def _write_done(session: UploadSession) -> None:
        session.in_flight -= 1
        session.last_active = time.monotonic()
        if session.in_flight == 0:
            session.idle.set()

    async def complete(self, upload_id: str) -> WrittenFile:
        """Check every part arrived, then rename the file into place (one caller wins)."""
        session = self.get(upload_id)
        self._check_open(session)
        missing = session.missing()
        if missing:
            listed = ", ".join(str(p) for p in missing[:_MAX_LISTED_MISSING])
            more = (
                f" (and {len(missing) - _MAX_LISTED_MISSING} more)"
                if len(missing) > _MAX_LISTED_MISSING
                else ""
            )
            raise InvalidArgumentError(
                f"upload {upload_id}: {len(missing)} of {session.num_parts} parts missing: "
                f"{listed}{more}"
            )
        session.state = SessionState.COMPLETING
        await self._drain(session)
        fd, session.fd = session.fd, -1
        try:
            written = await anyio.to_thread.run_sync(
                lambda: finalize(
                    fd,
                    session.temp,
                    session.target,
                    metadata=session.metadata,
                    publications=self._publications,
                ),
                abandon_on_cancel=False,
            )
        except BaseException:
            # finalize removed the temp file: the session cannot be resumed.
            session.state = SessionState.ABORTED
            self._forget_record(session)
            raise
        session.state = SessionState.DONE
        session.last_active = time.monotonic()
        self._forget_record(session)
        return written

    async def abort(self, upload_id: str) -> None:
        """Abort ``upload_id`` and remove its temp file (aborting twice is not an error)."""
        session = self.get(upload_id)
        if session.state is SessionState.ABORTED:
            return
        self._check_open(session)
        await self._abort(session)

    async def _abort(self, session: UploadSession) -> None:
        session.state = SessionState.ABORTED
        session.last_active = time.monotonic()
        await self._drain(session)
        fd, session.fd = session.fd, -1
        await anyio.to_thread.run_sync(discard, fd, session.temp)
        self._forget_record(session)

    async def _drain(self, session: UploadSession) -> None:
        """Wait for the writes in flight; the state forbids new ones, so the writer ends."""
        if session.in_flight:
            await session.idle.wait()
        session.writer.shutdown(wait=False)

    def _forget_record(self, session: UploadSession) -> None:
        if session.record is not None:
            with contextlib.suppress(OSError):
                session.record.unlink()


class _Reservation:
    """Holds a session's slot while its temp file is being created."""


def _preallocate(fd: int, size: int, *, what: str) -> None:
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # no fallocate here: sparse will do
            try:
                os.ftruncate(fd, size)
            except OSError as exc2:
                raise from_os_error(exc2, what) from exc2
            return
        raise from_os_error(exc, what) from exc
