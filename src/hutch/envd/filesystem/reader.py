"""Opening files for download: checks once, then reads from the open descriptor.

The file is opened first and ``fstat``-ed after, so what is checked (a regular file of that
size) is what is read, even if the path is replaced meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import stat
import zlib
from dataclasses import dataclass

from hutch.envd.users import User
from hutch.shared.errors import InvalidArgumentError, NotFoundError, from_os_error

#: The most of a /proc, /sys or empty-sized file a download reads (they are small).
PSEUDO_MAX = 16 << 20

#: Bytes read per worker-thread hop when streaming a download.
READ_CHUNK = 1 << 20


@dataclass(kw_only=True)
class OpenedFile:
    """A regular file open for reading."""

    path: str
    fd: int
    size: int

    def read(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset`` (blocking)."""
        try:
            return os.pread(self.fd, length, offset)
        except OSError as exc:
            raise from_os_error(exc, self.path) from exc

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def open_file(path: str, *, user: User) -> OpenedFile:
    """Open ``path`` (as root, for ``user``: ADR 12): 404 when missing, 400 for a directory."""
    if not os.path.exists(path):
        raise NotFoundError(f"{path}: no such file")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except IsADirectoryError:
        raise InvalidArgumentError(f"{path}: is a directory, not a file") from None
    except OSError as exc:
        raise from_os_error(exc, path) from exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise InvalidArgumentError(f"{path}: is {kind}, not a file")
    if st.st_size == 0 or _pseudo(path):
        return _snapshot(path, fd)
    return OpenedFile(path=path, fd=fd, size=st.st_size)


def _pseudo(path: str) -> bool:
    """Files whose size says nothing of their content: /proc and /sys (the kernel reports
    0; lxcfs's views in a sandbox report the host's length)."""
    real = os.path.realpath(path)
    return real.startswith(("/proc/", "/sys/"))


def _snapshot(path: str, fd: int) -> OpenedFile:
    """Read ``fd`` to its end (at most ``PSEUDO_MAX`` bytes) into a memfd: its length is
    then exact, and ``Content-Length`` true."""
    try:
        chunks, total = [], 0
        while total < PSEUDO_MAX:
            try:
                data = os.read(fd, min(1 << 16, PSEUDO_MAX - total))
            except BlockingIOError:
                break
            except OSError as exc:
                raise from_os_error(exc, path) from exc
            if not data:
                break
            chunks.append(data)
            total += len(data)
    finally:
        os.close(fd)
    mem = os.memfd_create("envd-read", os.MFD_CLOEXEC)
    os.write(mem, b"".join(chunks))
    return OpenedFile(path=path, fd=mem, size=total)


class GzipStream:
    """Compresses a file's bytes chunk by chunk (gzip format, level 6 like Go's default)."""

    def __init__(self, opened: OpenedFile) -> None:
        self._file = opened
        self._offset = 0
        self._z = zlib.compressobj(6, zlib.DEFLATED, 31)
        self.finished = False

    def next_chunk(self) -> bytes:
        """The next compressed bytes (maybe empty); ``finished`` is set after the trailer."""
        data = self._file.read(self._offset, READ_CHUNK)
        self._offset += len(data)
        if data:
            return self._z.compress(data)
        self.finished = True
        return self._z.flush()
