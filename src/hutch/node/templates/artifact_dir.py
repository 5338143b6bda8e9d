"""The shared artifact directory (issue 11, ADR 0029 addendum): templates that outlive
their node.

``HUTCH_NODE_ARTIFACT_DIR`` names a directory every node of a cluster mounts (NFS, for
example). A node publishes there every template it imports, builds, snapshots or fetches
from a peer, in the peer route's own form (``transfer.manifest`` and each part as the same
deterministic tar), and a node that lacks a template reads it from there before asking the
peers; the bytes go through the same check as a peer's (``Fetcher._part``: hashed while
written aside, refused on a mismatch with the recorded digest, renamed into place whole).

Layout::

    manifests/<name>.json     {"manifest": ArtifactManifest, "digests": {"kind/id": "sha256:..."}}
    parts/<sha256 hex>.tar    one part's tar, named by its digest: stored once however many
                              templates share it (an image under many snapshots)
    .tmp/                     files being written; each is renamed into place in one step

Deleting a template removes its manifest, then every part no manifest names. A publish
that races a delete's collection checks its parts again after writing its manifest and
writes back any that went; a fetch in that window fails (typed, retryable) and the node
asks the peers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

from hutch.node.templates.artifact import VERSION_SEP, validate_template_name
from hutch.node.templates.transfer import Exporter, write_tar
from hutch.shared import nodewire as wire
from hutch.shared.errors import ArtifactUnavailableError, HutchError, InvalidArgumentError

_log = logging.getLogger(__name__)

MANIFESTS: Final = "manifests"
PARTS: Final = "parts"
TMP: Final = ".tmp"
_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")
_BUILD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_CHUNK: Final = 1 << 20


def _checked_name(name: str) -> str:
    base, sep, build = name.partition(VERSION_SEP)
    validate_template_name(base)
    if sep and not _BUILD.match(build):
        raise InvalidArgumentError(f"invalid template build {name!r}")
    return name


def _hex(digest: str) -> str:
    found = _DIGEST.match(digest)
    if found is None:
        raise ArtifactUnavailableError(f"invalid part digest {digest!r} in the artifact directory")
    return found.group(1)


class _HashingFile:
    def __init__(self, out: object) -> None:
        self._out = out
        self.hash = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        return self._out.write(data)  # type: ignore[attr-defined,no-any-return]


class ArtifactDir:
    """One node's view of the shared directory ``root``; ``exporter`` reads its own parts."""

    def __init__(self, root: Path, exporter: Exporter) -> None:
        self.root = root
        self._exporter = exporter
        self._locks: dict[str, asyncio.Lock] = {}

    def _manifest_path(self, name: str) -> Path:
        return self.root / MANIFESTS / f"{_checked_name(name)}.json"

    def _part_path(self, digest: str) -> Path:
        return self.root / PARTS / f"{_hex(digest)}.tar"

    def _tmp(self, suffix: str) -> Path:
        tmp = self.root / TMP
        tmp.mkdir(mode=0o755, parents=True, exist_ok=True)
        return tmp / f"{uuid.uuid4().hex}{suffix}"

    def has(self, name: str) -> bool:
        """Whether ``name``'s manifest is in the directory."""
        return self._manifest_path(name).is_file()

    # ---- publishing ----------------------------------------------------------------------

    async def publish(self, name: str, *, _depth: int = 0) -> None:
        """Write ``name`` (and the base template it needs) to the directory: each part it
        lacks, then the manifest. ``TemplateNotFoundError`` if this node lacks ``name``."""
        if _depth > 8:
            raise InvalidArgumentError(f"template {name!r}: its bases nest too deep")
        async with self._locks.setdefault(name, asyncio.Lock()):
            found = await self._exporter.manifest(name)
            if found.base is not None and not self.has(found.base):
                await self.publish(found.base, _depth=_depth + 1)
            digests: dict[str, str] = {}
            for part in found.parts:
                root, known = await self._exporter.part(name, part.kind, part.id)
                digests[f"{part.kind}/{part.id}"] = known.digest
                await asyncio.to_thread(self._write_part, root, known.digest)
            record = {"manifest": found.model_dump(mode="json"), "digests": digests}
            await asyncio.to_thread(self._write_manifest, name, record)
            # A delete's collection may have taken a part between its write and the
            # manifest's: put back whatever went (the manifest now protects it).
            for part in found.parts:
                root, known = await self._exporter.part(name, part.kind, part.id)
                await asyncio.to_thread(self._write_part, root, known.digest)

    async def publish_quietly(self, name: str) -> None:
        """:meth:`publish`, a failure logged (the template stays usable on this node)."""
        try:
            await self.publish(name)
        except (HutchError, OSError) as exc:
            _log.warning("template %s not published to %s: %s", name, self.root, exc)

    def _write_part(self, root: Path, digest: str) -> None:
        final = self._part_path(digest)
        if final.is_file():
            return  # content-addressed: the same bytes are there already
        final.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        tmp = self._tmp(".tar")
        try:
            with tmp.open("wb") as out:
                sink = _HashingFile(out)
                write_tar(root, sink)  # type: ignore[arg-type]
                out.flush()
                os.fsync(out.fileno())
            got = f"sha256:{sink.hash.hexdigest()}"
            if got != digest:
                raise ArtifactUnavailableError(f"part {root} changed while published ({got})")
            os.rename(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)

    def _write_manifest(self, name: str, record: dict[str, object]) -> None:
        final = self._manifest_path(name)
        final.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        tmp = self._tmp(".json")
        try:
            with tmp.open("w") as out:
                json.dump(record, out, indent=1)
                out.flush()
                os.fsync(out.fileno())
            os.rename(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)

    # ---- deleting ------------------------------------------------------------------------

    async def remove(self, name: str) -> None:
        """Remove ``name``'s manifest and its kept builds' (``name@build``, deleted with
        it on the node) (idempotent), then the parts no manifest names."""
        path = self._manifest_path(name)
        async with self._locks.setdefault(name, asyncio.Lock()):
            await asyncio.to_thread(path.unlink, missing_ok=True)
            if VERSION_SEP not in name:
                for kept in path.parent.glob(f"{name}{VERSION_SEP}*.json"):
                    await asyncio.to_thread(kept.unlink, missing_ok=True)
        await asyncio.to_thread(self.collect)

    def collect(self) -> list[str]:
        """Remove every part no manifest names (listed before the manifests are read, so
        a part written after the listing is never taken); the digests removed."""
        parts_dir = self.root / PARTS
        if not parts_dir.is_dir():
            return []
        present = {p.name.removesuffix(".tar") for p in parts_dir.glob("*.tar")}
        used: set[str] = set()
        for path in (self.root / MANIFESTS).glob("*.json"):
            try:
                record = json.loads(path.read_text())
                used.update(_hex(d) for d in record["digests"].values())
            except (OSError, ValueError, KeyError, TypeError, HutchError) as exc:
                _log.warning("artifact manifest %s unreadable, its parts kept: %s", path, exc)
                return []  # unsure what it names: take nothing
        removed = sorted(present - used)
        for digest in removed:
            (parts_dir / f"{digest}.tar").unlink(missing_ok=True)
        return removed

    # ---- fetching ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def source(self) -> AsyncIterator[_DirSource]:
        """This directory as a ``transfer.Source`` for ``Fetcher``."""
        yield _DirSource(self)


class _DirSource:
    kind = "artifact directory"

    def __init__(self, store: ArtifactDir) -> None:
        self.label = f"dir:{store.root}"
        self._store = store
        self._digests: dict[tuple[str, str], str] = {}

    async def manifest(self, name: str) -> wire.ArtifactManifest:
        path = self._store._manifest_path(name)
        try:
            record = json.loads(await asyncio.to_thread(path.read_text))
            found = wire.ArtifactManifest.model_validate(record["manifest"])
            digests = record["digests"]
            if not isinstance(digests, dict):
                raise TypeError("its digests are not a map")
        except FileNotFoundError:
            raise ArtifactUnavailableError(
                f"template {name!r} is not in the artifact directory"
            ) from None
        except (ValueError, KeyError, TypeError) as exc:
            msg = f"artifact manifest {path} is unreadable: {exc}"
            raise ArtifactUnavailableError(msg) from exc
        if found.name != name:
            raise ArtifactUnavailableError(f"artifact manifest {path} names {found.name!r}")
        for part in found.parts:
            digest = str(digests.get(f"{part.kind}/{part.id}", ""))
            _hex(digest)
            self._digests[(name, f"{part.kind}/{part.id}")] = digest
        return found

    @contextlib.asynccontextmanager
    async def part(
        self, name: str, part: wire.ArtifactPart
    ) -> AsyncIterator[tuple[str, AsyncIterator[bytes]]]:
        digest = self._digests[(name, f"{part.kind}/{part.id}")]
        path = self._store._part_path(digest)
        try:
            source = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError:
            raise ArtifactUnavailableError(
                f"part {part.kind}/{part.id} of {name!r} is missing from the artifact directory"
            ) from None

        async def chunks() -> AsyncIterator[bytes]:
            while data := await asyncio.to_thread(source.read, _CHUNK):
                yield data

        try:
            yield digest, chunks()
        finally:
            source.close()
