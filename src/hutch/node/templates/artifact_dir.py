"""The shared artifact directory (issue 11, ADR 0029 addendum): the artifact store's
adapter for a directory every node of a cluster mounts (NFS, for example), named by
``HUTCH_NODE_ARTIFACT_DIR``.

The layout and its rules are ``artifact_store.ContentStore``'s; here a key is a path under
the root, and every file is written under ``.tmp/`` (fsync'd) and renamed into place in
one step, a part only once the SHA-256 of what was written is the one it is named by.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, BinaryIO, Final

from hutch.shared.errors import ArtifactUnavailableError, InvalidArgumentError

TMP: Final = ".tmp"


class _HashingFile:
    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.hash = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        return self._out.write(data)


class DirBlobs:
    """``artifact_store.Blobs`` as files under ``root``."""

    kind = "artifact directory"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.label = f"dir:{root}"

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") for p in parts):
            raise InvalidArgumentError(f"invalid artifact store key {key!r}")
        return self.root.joinpath(*parts)

    def _tmp(self, suffix: str) -> Path:
        tmp = self.root / TMP
        tmp.mkdir(mode=0o755, parents=True, exist_ok=True)
        return tmp / f"{uuid.uuid4().hex}{suffix}"

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def read(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def open(self, key: str) -> BinaryIO | None:
        try:
            return self._path(key).open("rb")
        except FileNotFoundError:
            return None

    def _install(self, key: str, fill: Callable[[BinaryIO], None]) -> None:
        final = self._path(key)
        final.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        tmp = self._tmp(final.suffix)
        try:
            with tmp.open("wb") as out:
                fill(out)
                out.flush()
                os.fsync(out.fileno())
            os.rename(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)

    def write(self, key: str, data: bytes) -> None:
        def fill(out: BinaryIO) -> None:
            out.write(data)

        self._install(key, fill)

    def write_part(self, key: str, produce: Callable[[IO[bytes]], None], digest: str) -> None:
        def fill(out: BinaryIO) -> None:
            sink = _HashingFile(out)
            produce(sink)  # type: ignore[arg-type]
            got = f"sha256:{sink.hash.hexdigest()}"
            if got != digest:
                raise ArtifactUnavailableError(f"{key}: the part written has digest {got}")

        self._install(key, fill)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str) -> list[str]:
        directory = self._path(prefix)
        if not directory.is_dir():
            return []
        return sorted(p.name for p in directory.iterdir() if p.is_file())
