"""The artifact store (issue 11, ADR 0029 addendum and amendment): templates and snapshots
that outlive their node.

One **port**, :class:`ArtifactStore`: what the node's ``TemplateManager`` (publish after
an import, a build, a snapshot; remove on delete) and the ``Fetcher`` (a ``Source`` tried
after the node's own disk and before the peers) need. One implementation of it,
:class:`ContentStore`, keeps the layout and its consistency rules, over **two adapters**
of the :class:`Blobs` seam: a shared directory every node mounts
(``artifact_dir.DirBlobs``, ``HUTCH_NODE_ARTIFACT_DIR``) and an S3-compatible bucket
(``artifact_s3.S3Blobs``, ``HUTCH_NODE_ARTIFACT_S3_BUCKET``).

Layout (keys; an S3 store puts its prefix before each)::

    manifests/<name>.json     {"manifest": ArtifactManifest, "digests": {"kind/id": "sha256:..."}}
    parts/<sha256 hex>.tar    one part's deterministic tar (``transfer.write_tar``), named by
                              its digest: stored once however many templates share it

A part becomes visible only whole and only with the digest it is named by
(:meth:`Blobs.write_part`: the directory renames a checked temporary file into place, S3
completes a checked multipart upload or aborts it). A fetch reads the digests from the
manifest *before* the bytes, and ``Fetcher._part`` checks one against the other as for a
peer: written aside while hashed, refused on a mismatch, renamed into place whole.

Deleting a template removes its manifest, then every part no manifest names (parts are
listed before the manifests are read). A publish that races a delete's collection checks
its parts again after writing its manifest and writes back any that went; a fetch in that
window fails (typed, retryable) and the node asks the peers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import IO, Final, Protocol

from hutch.node.templates.artifact import VERSION_SEP, validate_template_name
from hutch.node.templates.transfer import Exporter, Source, write_tar
from hutch.shared import nodewire as wire
from hutch.shared.errors import ArtifactUnavailableError, HutchError, InvalidArgumentError

_log = logging.getLogger(__name__)

MANIFESTS: Final = "manifests"
PARTS: Final = "parts"
_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")
_BUILD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_CHUNK: Final = 1 << 20


class ArtifactStore(Protocol):
    """The port: where templates are published for every node, and read back."""

    #: Names the store in fetch results and logs (``dir:/mnt/x``, ``s3://bucket/prefix``).
    label: str

    async def has(self, name: str) -> bool: ...

    async def publish(self, name: str) -> None: ...

    async def publish_quietly(self, name: str) -> None: ...

    async def remove(self, name: str) -> None: ...

    def source(self) -> contextlib.AbstractAsyncContextManager[Source]: ...


class Reader(Protocol):
    """An open blob: ``read(n)`` until it returns ``b""``, then ``close()``."""

    def read(self, size: int) -> bytes: ...

    def close(self) -> None: ...


class Blobs(Protocol):
    """What an adapter stores: named blobs, each written whole or not at all. Blocking
    calls (run in a worker thread); a foreign failure is raised as a ``HutchError``
    (``ArtifactUnavailableError``: retryable) or an ``OSError``, never as the driver's own.
    """

    label: str
    #: Named in errors: "artifact directory", "S3 artifact store".
    kind: str

    def exists(self, key: str) -> bool: ...

    def read(self, key: str) -> bytes | None:
        """The blob's bytes, None when there is none."""
        ...

    def open(self, key: str) -> Reader | None:
        """The blob as a stream, None when there is none."""
        ...

    def write(self, key: str, data: bytes) -> None:
        """Replace ``key`` with ``data`` in one step."""
        ...

    def write_part(self, key: str, produce: Callable[[IO[bytes]], None], digest: str) -> None:
        """Store what ``produce`` writes as ``key``, visible only whole and only if its
        SHA-256 is ``digest`` (else ``ArtifactUnavailableError``, nothing left)."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key`` (idempotent)."""
        ...

    def list(self, prefix: str) -> list[str]:
        """The names directly under ``prefix`` (``manifests``: ``img.json``, ...)."""
        ...


def checked_name(name: str) -> str:
    """``name`` if it is a template name, or ``name@build`` with a valid build."""
    base, sep, build = name.partition(VERSION_SEP)
    validate_template_name(base)
    if sep and not _BUILD.match(build):
        raise InvalidArgumentError(f"invalid template build {name!r}")
    return name


def digest_hex(digest: str, *, kind: str = "artifact store") -> str:
    """The hex of a ``sha256:<hex>`` digest (``ArtifactUnavailableError`` if it is not one)."""
    found = _DIGEST.match(digest)
    if found is None:
        raise ArtifactUnavailableError(f"invalid part digest {digest!r} in the {kind}")
    return found.group(1)


def manifest_key(name: str) -> str:
    """The key of ``name``'s manifest."""
    return f"{MANIFESTS}/{checked_name(name)}.json"


def part_key(digest: str) -> str:
    """The key of the part whose tar has ``digest``."""
    return f"{PARTS}/{digest_hex(digest)}.tar"


class ContentStore:
    """:class:`ArtifactStore` over ``blobs``; ``exporter`` reads this node's own parts."""

    def __init__(self, blobs: Blobs, exporter: Exporter) -> None:
        self.blobs = blobs
        self.label = blobs.label
        self._exporter = exporter
        self._locks: dict[str, asyncio.Lock] = {}

    async def has(self, name: str) -> bool:
        """Whether ``name``'s manifest is in the store."""
        return await asyncio.to_thread(self.blobs.exists, manifest_key(name))

    # ---- publishing ----------------------------------------------------------------------

    async def publish(self, name: str, *, _depth: int = 0) -> None:
        """Write ``name`` (and the base template it needs) to the store: each part it
        lacks, then the manifest. ``TemplateNotFoundError`` if this node lacks ``name``."""
        if _depth > 8:
            raise InvalidArgumentError(f"template {name!r}: its bases nest too deep")
        async with self._locks.setdefault(name, asyncio.Lock()):
            found = await self._exporter.manifest(name)
            if found.base is not None and not await self.has(found.base):
                await self.publish(found.base, _depth=_depth + 1)
            digests: dict[str, str] = {}
            for part in found.parts:
                root, known = await self._exporter.part(name, part.kind, part.id)
                digests[f"{part.kind}/{part.id}"] = known.digest
                await self._write_part(root, known.digest)
            record = {"manifest": found.model_dump(mode="json"), "digests": digests}
            data = json.dumps(record, indent=1).encode()
            await asyncio.to_thread(self.blobs.write, manifest_key(name), data)
            # A delete's collection may have taken a part between its write and the
            # manifest's: put back whatever went (the manifest now protects it).
            for part in found.parts:
                root, known = await self._exporter.part(name, part.kind, part.id)
                await self._write_part(root, known.digest)

    async def publish_quietly(self, name: str) -> None:
        """:meth:`publish`, a failure logged (the template stays usable on this node)."""
        try:
            await self.publish(name)
        except (HutchError, OSError) as exc:
            _log.warning("template %s not published to %s: %s", name, self.label, exc)

    async def _write_part(self, root: Path, digest: str) -> None:
        key = part_key(digest)
        if await asyncio.to_thread(self.blobs.exists, key):
            return  # content-addressed: the same bytes are there already

        def produce(out: IO[bytes]) -> None:
            write_tar(root, out)

        await asyncio.to_thread(self.blobs.write_part, key, produce, digest)

    # ---- deleting ------------------------------------------------------------------------

    async def remove(self, name: str) -> None:
        """Remove ``name``'s manifest and its kept builds' (``name@build``, deleted with
        it on the node) (idempotent), then the parts no manifest names."""
        key = manifest_key(name)
        async with self._locks.setdefault(name, asyncio.Lock()):
            await asyncio.to_thread(self.blobs.delete, key)
            if VERSION_SEP not in name:
                kept = await asyncio.to_thread(self.blobs.list, MANIFESTS)
                for file in kept:
                    if file.startswith(f"{name}{VERSION_SEP}") and file.endswith(".json"):
                        await asyncio.to_thread(self.blobs.delete, f"{MANIFESTS}/{file}")
        await asyncio.to_thread(self.collect)

    def collect(self) -> list[str]:
        """Remove every part no manifest names (listed before the manifests are read, so
        a part written after the listing is never taken); the digests removed."""
        present = {n.removesuffix(".tar") for n in self.blobs.list(PARTS) if n.endswith(".tar")}
        if not present:
            return []
        used: set[str] = set()
        for file in self.blobs.list(MANIFESTS):
            if not file.endswith(".json"):
                continue
            key = f"{MANIFESTS}/{file}"
            try:
                record = json.loads(self.blobs.read(key) or b"null")
                used.update(digest_hex(d) for d in record["digests"].values())
            except (ValueError, KeyError, TypeError, AttributeError, HutchError) as exc:
                _log.warning("artifact manifest %s unreadable, its parts kept: %s", key, exc)
                return []  # unsure what it names: take nothing
        removed = sorted(present - used)
        for digest in removed:
            self.blobs.delete(f"{PARTS}/{digest}.tar")
        return removed

    # ---- fetching ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def source(self) -> AsyncIterator[_StoreSource]:
        """This store as a ``transfer.Source`` for ``Fetcher``."""
        yield _StoreSource(self.blobs)


class _StoreSource:
    def __init__(self, blobs: Blobs) -> None:
        self.label = blobs.label
        self.kind = blobs.kind
        self._blobs = blobs
        self._digests: dict[tuple[str, str], str] = {}

    async def manifest(self, name: str) -> wire.ArtifactManifest:
        key = manifest_key(name)
        raw = await asyncio.to_thread(self._blobs.read, key)
        if raw is None:
            raise ArtifactUnavailableError(f"template {name!r} is not in the {self.kind}")
        try:
            record = json.loads(raw)
            found = wire.ArtifactManifest.model_validate(record["manifest"])
            digests = record["digests"]
            if not isinstance(digests, dict):
                raise TypeError("its digests are not a map")
        except (ValueError, KeyError, TypeError) as exc:
            msg = f"artifact manifest {self.label}/{key} is unreadable: {exc}"
            raise ArtifactUnavailableError(msg) from exc
        if found.name != name:
            raise ArtifactUnavailableError(f"artifact manifest {key} names {found.name!r}")
        for part in found.parts:
            digest = str(digests.get(f"{part.kind}/{part.id}", ""))
            digest_hex(digest, kind=self.kind)
            self._digests[(name, f"{part.kind}/{part.id}")] = digest
        return found

    @contextlib.asynccontextmanager
    async def part(
        self, name: str, part: wire.ArtifactPart
    ) -> AsyncIterator[tuple[str, AsyncIterator[bytes]]]:
        digest = self._digests[(name, f"{part.kind}/{part.id}")]
        reader = await asyncio.to_thread(self._blobs.open, part_key(digest))
        if reader is None:
            raise ArtifactUnavailableError(
                f"part {part.kind}/{part.id} of {name!r} is missing from the {self.kind}"
            )

        async def chunks() -> AsyncIterator[bytes]:
            while data := await asyncio.to_thread(reader.read, _CHUNK):
                yield data

        try:
            yield digest, chunks()
        finally:
            await asyncio.to_thread(reader.close)
