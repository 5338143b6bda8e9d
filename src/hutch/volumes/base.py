"""The ``VolumeBackend`` seam, the records it speaks, and the path rules shared by backends.

Paths are the content API's: ``/`` (or empty, or ``.``) is the volume's root, a leading ``/``
is optional, ``.`` components are dropped. Refused with 400 before any backend sees them:
``..`` anywhere (even when it would stay inside), NUL and other control characters, a
component longer than 255 bytes, a path longer than 4096 bytes.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Literal, Protocol

from hutch.shared.errors import InvalidArgumentError

EntryType = Literal["file", "directory", "symlink", "unknown"]

MAX_COMPONENT_BYTES: Final = 255
MAX_PATH_BYTES: Final = 4096


def _has_control(text: str) -> bool:
    return any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text)


def normalize_path(path: str) -> str:
    """``path`` relative to the volume root (``""`` for the root), or ``InvalidArgumentError``."""
    if _has_control(path):
        raise InvalidArgumentError(f"path {path!r}: control characters are not allowed")
    if len(path.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
        raise InvalidArgumentError(f"path is longer than {MAX_PATH_BYTES} bytes")
    parts = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            raise InvalidArgumentError(f"path {path!r}: '..' is not allowed in volume paths")
        if len(part.encode("utf-8", "surrogateescape")) > MAX_COMPONENT_BYTES:
            raise InvalidArgumentError(f"path {path!r}: a name is longer than 255 bytes")
        parts.append(part)
    return "/".join(parts)


def display_path(rel: str) -> str:
    """The path as the API shows it: ``/`` + the relative path."""
    return "/" + rel


def split_parent(rel: str) -> tuple[str, str]:
    """``("a/b", "c")`` for ``"a/b/c"``; the root has no parent (``InvalidArgumentError``)."""
    if not rel:
        raise InvalidArgumentError("this operation is not allowed on the volume's root")
    parent, _, name = rel.rpartition("/")
    return parent, name


@dataclass(frozen=True, slots=True, kw_only=True)
class EntryStat:
    """One file, directory or symlink of a volume (E2B's ``VolumeEntryStat``)."""

    name: str
    type: EntryType
    #: ``/``-rooted path inside the volume.
    path: str
    size: int
    #: Permission bits (``st_mode & 0o7777``).
    mode: int
    uid: int
    gid: int
    atime: datetime
    mtime: datetime
    ctime: datetime
    target: str | None = None
    #: ``user.e2b.*`` metadata (hutch's addition; the SDK ignores it).
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Owner:
    """Who owns a new entry and its mode; ``None`` fields take the backend's defaults."""

    uid: int | None = None
    gid: int | None = None
    mode: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    """A volume's space: what its files use and what it may hold."""

    used_bytes: int
    total_bytes: int


class FileContent(Protocol):
    """An open file to stream from: its size, and ``chunks(start, end)`` (end exclusive)."""

    size: int

    def chunks(self, start: int, end: int) -> AsyncIterator[bytes]: ...
    async def host_path(self, volume_id: str) -> str:
        """A host directory holding the volume's files, for bind mounts (``mountable`` only)."""
        ...

    async def aclose(self) -> None: ...


class VolumeBackend(Protocol):
    """Where volumes' data lives. Every method takes a normalised relative path
    (:func:`normalize_path`) and raises only ``hutch.shared.errors``."""

    #: Recorded on the volume's row (``"local"``, ``"s3"``).
    name: str
    #: Whether sandboxes can bind-mount its volumes (``host_path``).
    mountable: bool

    async def capacity_bytes(self) -> int:
        """The largest quota a new volume may have now."""
        ...

    async def create(self, volume_id: str, *, quota_bytes: int) -> None: ...
    async def delete(self, volume_id: str) -> None: ...
    async def usage(self, volume_id: str) -> Usage: ...
    async def stat(self, volume_id: str, rel: str) -> EntryStat: ...
    async def list_dir(self, volume_id: str, rel: str, *, depth: int) -> list[EntryStat]: ...
    async def make_dir(
        self, volume_id: str, rel: str, *, owner: Owner, parents: bool
    ) -> EntryStat: ...
    async def write_file(
        self,
        volume_id: str,
        rel: str,
        chunks: AsyncIterable[bytes],
        *,
        owner: Owner,
        metadata: Mapping[str, str],
    ) -> EntryStat: ...
    async def open_file(self, volume_id: str, rel: str) -> FileContent: ...
    async def remove(self, volume_id: str, rel: str) -> None: ...
    async def move(self, volume_id: str, src: str, dst: str) -> EntryStat: ...
    async def set_attrs(self, volume_id: str, rel: str, *, owner: Owner) -> EntryStat: ...
    async def host_path(self, volume_id: str) -> str:
        """A host directory holding the volume's files, for bind mounts (``mountable`` only)."""
        ...

    async def aclose(self) -> None: ...
