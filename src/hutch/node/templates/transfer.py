"""Moving a template's artifact between nodes (ADR 0029): export to a peer, fetch from one.

A template is made of **parts**, each one immutable directory of the templates home:

* ``artifact/<fingerprint>``: a sealed image tree, ``.artifacts/<fingerprint>/`` (ADR 0006);
* ``layer/<snapshot id>``: a snapshot's layer, ``.snapshots/<id>/`` (docs/pause.md);
* ``tree/<name>``: a template with its own tree, ``<name>/`` (``template.json`` and
  ``rootfs/``).

:func:`manifest` says which parts a template needs plus its ``template.json``; each part
crosses as one tar whose bytes are deterministic (sorted entries, numeric owners, whole
second mtimes, xattrs as ``HUTCH.xattr.*`` records), so its SHA-256 (computed once per
part and kept in memory) is sent *before* the bytes (``X-Hutch-Artifact-Digest``). The
receiver writes the stream to a temporary file while hashing it, refuses it on a
mismatch, and only then extracts it into a temporary directory that is renamed into place
in one ``rename(2)``: a half-transfer or a corrupted one never becomes a part, and a
crash leaves only ``.incoming/`` leftovers, removed by the next fetch. The template itself
is published last (its ``template.json`` with the receiver's own paths), so it is either
whole or absent.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import json
import os
import queue
import shutil
import stat
import tarfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, Protocol

import httpx

from hutch.node.templates.artifact import (
    ARTIFACTS_DIR,
    SEAL_FILE,
    VERSION_SEP,
    VERSIONS_DIR,
    DirTemplateStore,
    TemplateArtifact,
    TemplateNotFoundError,
    validate_template_name,
)
from hutch.node.templates.snapshot import SNAPSHOTS_DIR
from hutch.shared import nodewire as wire
from hutch.shared.errors import ArtifactUnavailableError, HutchError, InvalidArgumentError

if TYPE_CHECKING:
    from hutch.node.templates.artifact_store import ArtifactStore

#: Header of a part's answer: ``sha256:<hex>`` of exactly the bytes that follow.
DIGEST_HEADER: Final = "X-Hutch-Artifact-Digest"
INCOMING_DIR: Final = ".incoming"
_XATTR: Final = "HUTCH.xattr."
_CHUNK: Final = 1 << 20
_KINDS: Final = {"artifact": ARTIFACTS_DIR, "layer": SNAPSHOTS_DIR, "tree": ""}


def part_dir(templates_dir: Path, kind: str, part_id: str) -> Path:
    """Where part ``kind/part_id`` lives under ``templates_dir``."""
    if kind not in _KINDS or not part_id or "/" in part_id or part_id.startswith("."):
        raise InvalidArgumentError(f"invalid artifact part {kind}/{part_id}")
    sub = _KINDS[kind]
    return templates_dir / sub / part_id if sub else templates_dir / part_id


def _home_of(path: Path, sub: str) -> Path:
    """The templates directory that holds ``path`` (``<home>/<sub>/<id>/...``)."""
    for parent in path.parents:
        if parent.name == sub:
            return parent.parent
    raise InvalidArgumentError(f"{path} is not under a {sub} directory")


async def manifest(
    store: DirTemplateStore, templates_dir: Path, name: str
) -> wire.ArtifactManifest:
    """What a peer needs to hold ``name`` (``TemplateNotFoundError`` if this node lacks it)."""
    found = await store.get(name)
    data = _template_json(store, templates_dir, name)
    parts: list[wire.ArtifactPart] = []
    layers: list[str] = []
    for layer in found.layers:  # top-most first
        layer_id = layer.parent.name
        layers.append(layer_id)
        parts.append(wire.ArtifactPart(kind="layer", id=layer_id))
    base: str | None = None
    if found.artifact:
        parts.append(wire.ArtifactPart(kind="artifact", id=found.artifact))
    elif found.layers:
        base = found.snapshot_of  # its tree is that template's own: the receiver's
    else:
        parts.append(wire.ArtifactPart(kind="tree", id=name))
    return wire.ArtifactManifest(
        name=name, template=data, parts=list(reversed(parts)), layers=layers, base=base
    )


def _template_json(store: DirTemplateStore, templates_dir: Path, name: str) -> dict[str, Any]:
    if VERSION_SEP in name:
        base, _, build = name.partition(VERSION_SEP)
        path = templates_dir / VERSIONS_DIR / base / build / "template.json"
    else:
        shared = None if (templates_dir / name).is_dir() else store.shared_dir_of(name)
        path = (shared or templates_dir) / name / "template.json"
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def source_dir(found: TemplateArtifact, kind: str, part_id: str, templates_dir: Path) -> Path:
    """The directory of one of ``found``'s parts on this node (the shared homes' too)."""
    if kind == "layer":
        for layer in found.layers:
            if layer.parent.name == part_id:
                return layer.parent
    elif (kind == "artifact" and found.artifact == part_id) or (
        kind == "tree" and found.artifact is None and not found.layers
    ):
        return found.rootfs.parent
    raise TemplateNotFoundError(f"template {found.name!r} has no part {kind}/{part_id}")


# ---- the deterministic tar ---------------------------------------------------------------


def _entries(root: Path) -> Iterator[tuple[str, Path]]:
    """``(archive name, path)`` of ``root`` and everything below it, sorted, depth first."""
    yield ".", root
    stack = [(".", root)]
    while stack:
        prefix, directory = stack.pop()
        with os.scandir(directory) as it:
            names = sorted(e.name for e in it)
        subdirs = []
        for entry_name in names:
            path = directory / entry_name
            arc = entry_name if prefix == "." else f"{prefix}/{entry_name}"
            yield arc, path
            if stat.S_ISDIR(path.lstat().st_mode):
                subdirs.append((arc, path))
        stack.extend(reversed(subdirs))


def write_tar(root: Path, out: IO[bytes]) -> None:
    """``root`` as a tar on ``out``: the same bytes for the same tree, every time."""
    links: dict[tuple[int, int], str] = {}
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for arc, path in _entries(root):
            st = path.lstat()
            info = tarfile.TarInfo(arc)
            info.mode = stat.S_IMODE(st.st_mode)
            info.uid, info.gid, info.uname, info.gname = st.st_uid, st.st_gid, "", ""
            info.mtime = int(st.st_mtime)
            fmt = stat.S_IFMT(st.st_mode)
            body: IO[bytes] | None = None
            if fmt == stat.S_IFDIR:
                info.type = tarfile.DIRTYPE
            elif fmt == stat.S_IFLNK:
                info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
            elif fmt == stat.S_IFREG:
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in links:
                    info.type, info.linkname = tarfile.LNKTYPE, links[key]
                else:
                    links[key] = arc
                    info.type, info.size = tarfile.REGTYPE, st.st_size
                    body = path.open("rb")
            elif fmt in (stat.S_IFCHR, stat.S_IFBLK):
                info.type = tarfile.CHRTYPE if fmt == stat.S_IFCHR else tarfile.BLKTYPE
                info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            elif fmt == stat.S_IFIFO:
                info.type = tarfile.FIFOTYPE
            else:
                continue  # sockets: nothing to keep
            with contextlib.suppress(OSError):
                for attr in sorted(os.listxattr(path, follow_symlinks=False)):
                    value = os.getxattr(path, attr, follow_symlinks=False)
                    info.pax_headers[_XATTR + attr] = base64.b64encode(value).decode()
            try:
                tar.addfile(info, body)
            finally:
                if body is not None:
                    body.close()


class _HashSink:
    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return len(data)


class _QueueSink:
    """A file-like ``write`` that hands ~1 MiB chunks to a bounded queue (backpressure)."""

    def __init__(self, q: queue.Queue[bytes | BaseException | None]) -> None:
        self._q = q
        self._buf = bytearray()
        self.closed = threading.Event()

    def write(self, data: bytes) -> int:
        if self.closed.is_set():
            raise BrokenPipeError("the reader went away")
        self._buf += data
        if len(self._buf) >= _CHUNK:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self._buf:
            self._q.put(bytes(self._buf))
            self._buf.clear()


@dataclass(frozen=True, slots=True)
class PartDigest:
    """A part's tar: its SHA-256 and size."""

    digest: str
    size: int


class Exporter:
    """The node's side of a peer's fetch: manifests, part digests (kept), part streams."""

    def __init__(self, store: DirTemplateStore, templates_dir: Path) -> None:
        self._store = store
        self._dir = templates_dir
        self._digests: dict[tuple[str, str], PartDigest] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def manifest(self, name: str) -> wire.ArtifactManifest:
        """See :func:`manifest`."""
        return await manifest(self._store, self._dir, name)

    async def part(self, name: str, kind: str, part_id: str) -> tuple[Path, PartDigest]:
        """The part's directory and its tar's digest (computed once: parts never change)."""
        root = source_dir(await self._store.get(name), kind, part_id, self._dir)
        key = (kind, part_id)
        async with self._locks.setdefault(key, asyncio.Lock()):
            known = self._digests.get(key)
            if known is None:
                sink = _HashSink()
                await asyncio.to_thread(write_tar, root, sink)  # type: ignore[arg-type]
                known = PartDigest(f"sha256:{sink.hash.hexdigest()}", sink.size)
                self._digests[key] = known
        return root, known

    @staticmethod
    async def stream(root: Path) -> AsyncIterator[bytes]:
        """The part's tar, written by a worker thread, ~1 MiB at a time."""
        q: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=8)
        sink = _QueueSink(q)

        def produce() -> None:
            try:
                write_tar(root, sink)  # type: ignore[arg-type]
                sink.flush()
                q.put(None)
            except BaseException as exc:  # handed to the reader, which raises it
                q.put(exc)

        worker = threading.Thread(target=produce, name="hutch-export", daemon=True)
        worker.start()
        try:
            while True:
                item = await asyncio.to_thread(q.get)
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            sink.closed.set()
            with contextlib.suppress(queue.Empty):
                while True:
                    q.get_nowait()  # unblock a producer waiting on a full queue


# ---- the receiving side --------------------------------------------------------------


def _safe_target(root: Path, name: str) -> Path:
    """``root/name`` for a member name that stays below ``root`` (no ``..``, no absolute
    path, no parent that is a symlink)."""
    parts = Path(name).parts
    if name.startswith("/") or ".." in parts:
        raise InvalidArgumentError(f"unsafe path in an artifact: {name!r}")
    target = root.joinpath(*parts) if parts and parts != (".",) else root
    parent = os.path.realpath(target.parent) if target != root else str(root)
    if target != root and not (parent == str(root) or parent.startswith(f"{root}/")):
        raise InvalidArgumentError(f"unsafe path in an artifact: {name!r}")
    return target


def extract_tar(source: IO[bytes], root: Path) -> None:
    """Extract a :func:`write_tar` archive into the existing empty directory ``root``:
    owners, modes, mtimes, xattrs, devices and hard links as they were."""
    root = Path(os.path.realpath(root))
    dirs: list[tuple[Path, tarfile.TarInfo]] = []
    with tarfile.open(fileobj=source, mode="r|") as tar:
        for member in tar:
            target = _safe_target(root, member.name)
            if member.islnk():
                _safe_target(root, member.linkname)
            if target == root:
                dirs.append((root, member))
            else:
                tar.extract(member, root, set_attrs=True, numeric_owner=True,
                            filter="fully_trusted")  # fmt: skip
                if member.isdir():
                    dirs.append((target, member))
                elif member.issym():  # tarfile sets no symlink's mtime: it would be now's
                    os.utime(target, (member.mtime, member.mtime), follow_symlinks=False)
            for key, value in member.pax_headers.items():
                if key.startswith(_XATTR):
                    os.setxattr(target, key.removeprefix(_XATTR), base64.b64decode(value),
                                follow_symlinks=False)  # fmt: skip
    for path, member in reversed(dirs):  # children first: their creation moved the mtime
        os.chown(path, member.uid, member.gid)
        os.chmod(path, member.mode)
        os.utime(path, (member.mtime, member.mtime))


def address_url(address: str) -> tuple[str, httpx.AsyncBaseTransport | None]:
    """``(base_url, transport)`` for a peer's node API address (``http(s)://`` or ``unix:``)."""
    if address.startswith("unix:"):
        return "http://node", httpx.AsyncHTTPTransport(uds=address.removeprefix("unix:"))
    if address.startswith(("http://", "https://")):
        return address.rstrip("/"), None
    raise InvalidArgumentError(f"peer address {address!r}: want http(s)://host:port or unix:/path")


class Source(Protocol):
    """Where a fetch reads a template from: a peer node, or the artifact store.

    ``part`` yields the digest the bytes must have (sent or recorded *before* them) and
    the bytes; :meth:`Fetcher._part` checks one against the other, whatever the source.
    """

    label: str
    kind: str

    async def manifest(self, name: str) -> wire.ArtifactManifest: ...

    def part(
        self, name: str, part: wire.ArtifactPart
    ) -> contextlib.AbstractAsyncContextManager[tuple[str, AsyncIterator[bytes]]]: ...


class _PeerSource:
    """A peer's node API (``/v1/artifacts/...``)."""

    kind = "peer"

    def __init__(self, address: str, client: httpx.AsyncClient) -> None:
        self.label = address
        self._client = client

    async def manifest(self, name: str) -> wire.ArtifactManifest:
        answer = await self._client.get(f"/artifacts/{name}")
        if answer.status_code != 200:
            raise ArtifactUnavailableError(
                f"peer answered {answer.status_code} for {name!r}: {answer.text[:300]}"
            )
        return wire.ArtifactManifest.model_validate_json(answer.content)

    @contextlib.asynccontextmanager
    async def part(
        self, name: str, part: wire.ArtifactPart
    ) -> AsyncIterator[tuple[str, AsyncIterator[bytes]]]:
        path = f"/artifacts/{name}/parts/{part.kind}/{part.id}"
        async with self._client.stream("GET", path) as r:
            if r.status_code != 200:
                await r.aread()
                raise ArtifactUnavailableError(
                    f"peer answered {r.status_code} for part {part.kind}/{part.id}"
                )
            yield r.headers.get(DIGEST_HEADER, ""), r.aiter_bytes(_CHUNK)


@dataclass(frozen=True, slots=True)
class Fetched:
    """One fetch: from where, how many bytes crossed, in how long."""

    source: str
    bytes: int
    seconds: float


class Fetcher:
    """Fetches templates this node lacks, one fetch per name at a time: from the
    artifact store first, then from the peers.

    ``token``: this node's cluster token (every node of a cluster shares it, ADR 0025);
    ``transport``: for tests, the transport to reach every peer by; ``artifact_store``:
    the shared directory or S3 bucket (``node/templates/artifact_store.py``), tried before
    the peers.
    """

    def __init__(
        self,
        store: DirTemplateStore,
        templates_dir: Path,
        *,
        token: str | None,
        transport: Callable[[str], httpx.AsyncBaseTransport | None] | None = None,
        artifact_store: ArtifactStore | None = None,
    ) -> None:
        self._store = store
        self._dir = templates_dir
        self._token = token
        self._transport = transport
        self._artifact_store = artifact_store
        self._locks: dict[str, asyncio.Lock] = {}

    async def holds(self, name: str) -> bool:
        """Whether ``name`` is usable on this node now."""
        try:
            await self._store.get(name)
        except (TemplateNotFoundError, InvalidArgumentError):
            return False
        return True

    async def ensure(self, name: str, sources: Sequence[str]) -> Fetched | None:
        """Make ``name`` usable here: None if it was already, else the fetch that did it.

        The artifact store (when configured) is tried first, then each peer of
        ``sources`` (ADR 0029 addendum); ``ArtifactUnavailableError`` (naming each one's
        failure) when none served it. A template a peer served is published to the store
        before this returns (kept for when the peers are gone)."""
        async with self._locks.setdefault(name, asyncio.Lock()):
            if await self.holds(name):
                return None
            store = self._artifact_store
            if not sources and store is None:
                raise ArtifactUnavailableError(
                    f"template {name!r} is not on this node and no peer holding it was named",
                    public_message=f"Template '{name}' is not on this node",
                )
            failures = []
            candidates: list[Callable[[], contextlib.AbstractAsyncContextManager[Source]]] = []
            if store is not None:
                candidates.append(store.source)
            candidates.extend(functools.partial(self._peer, s) for s in sources)
            for open_source in candidates:
                started = time.monotonic()
                label = "?"
                try:
                    async with open_source() as source:
                        label = source.label
                        size = await self._fetch(name, source, depth=0)
                except (HutchError, httpx.HTTPError, OSError, tarfile.TarError) as exc:
                    failures.append(f"{label}: {getattr(exc, 'message', None) or exc!r}")
                    continue
                if store is not None and label != store.label:
                    await store.publish_quietly(name)  # kept for when the peers are gone
                return Fetched(source=label, bytes=size, seconds=time.monotonic() - started)
            raise ArtifactUnavailableError(
                f"template {name!r} is not on this node and no peer served it "
                f"({'; '.join(failures)})",
                public_message=f"Template '{name}' could not be fetched to this node",
            )

    @contextlib.asynccontextmanager
    async def _peer(self, address: str) -> AsyncIterator[Source]:
        base_url, transport = address_url(address)
        if self._transport is not None:
            transport = self._transport(address)
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        async with httpx.AsyncClient(
            base_url=f"{base_url}{wire.PREFIX}", transport=transport, headers=headers,
            timeout=httpx.Timeout(300.0, connect=10.0, read=None),
        ) as client:  # fmt: skip
            yield _PeerSource(address, client)

    async def _fetch(self, name: str, source: Source, *, depth: int) -> int:
        if depth > 8:
            raise InvalidArgumentError(f"template {name!r}: its bases nest too deep")
        found = await source.manifest(name)
        size = 0
        if found.base is not None and not await self.holds(found.base):
            size += await self._fetch(found.base, source, depth=depth + 1)
        for part in found.parts:
            target = part_dir(self._dir, part.kind, part.id)
            if part.kind == "tree":
                if await self.holds(part.id):
                    continue
            elif target.exists():
                continue  # parts never change: the one this node has is the same
            size += await self._part(source, name, part, target)
        if not any(p.kind == "tree" for p in found.parts):
            await asyncio.to_thread(self._publish, found)
        return size

    async def _part(self, source: Source, name: str, part: wire.ArtifactPart, target: Path) -> int:
        """Receive one part: written aside while hashed, refused on a digest mismatch,
        extracted aside, renamed into place (the same for a peer and the store)."""
        incoming = self._dir / INCOMING_DIR
        incoming.mkdir(mode=0o700, parents=True, exist_ok=True)
        token = uuid.uuid4().hex
        tar_path, tree = incoming / f"{token}.tar", incoming / token
        hasher, size = hashlib.sha256(), 0
        try:
            async with source.part(name, part) as (want, chunks):
                with tar_path.open("wb") as out:
                    async for chunk in chunks:
                        hasher.update(chunk)
                        size += len(chunk)
                        await asyncio.to_thread(out.write, chunk)
            got = f"sha256:{hasher.hexdigest()}"
            if got != want:
                raise ArtifactUnavailableError(
                    f"part {part.kind}/{part.id} of {name!r}: digest {got} is not the "
                    f"{source.kind}'s {want or '(none sent)'}"
                )
            tree.mkdir(mode=0o700)
            await asyncio.to_thread(self._extract, tar_path, tree)
            target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            if part.kind == "tree" and target.exists():
                shutil.rmtree(tree)
            else:
                os.rename(tree, target)  # the one step that makes the part exist
            return size
        finally:
            tar_path.unlink(missing_ok=True)
            shutil.rmtree(tree, ignore_errors=True)

    @staticmethod
    def _extract(tar_path: Path, tree: Path) -> None:
        with tar_path.open("rb") as source:
            extract_tar(source, tree)

    def _publish(self, found: wire.ArtifactManifest) -> None:
        """Write ``found``'s ``template.json`` with this node's paths, atomically."""
        data = dict(found.template)
        # Every path written below comes from a part id the peer named and part_dir checked.
        data["layers"] = [str(part_dir(self._dir, "layer", lid) / "layer") for lid in found.layers]
        fingerprint = data.get("artifact")
        if fingerprint and not any(p.kind == "artifact" and p.id == fingerprint
                                   for p in found.parts):  # fmt: skip
            raise InvalidArgumentError(f"template {found.name!r}: its artifact is not a part")
        data.pop("rootfs_path", None)
        if found.base is not None and not data.get("artifact"):
            data["rootfs_path"] = _own_rootfs(self._store, self._dir, found.base)
        if data.get("artifact"):
            seal = self._dir / ARTIFACTS_DIR / str(data["artifact"]) / SEAL_FILE
            if not seal.is_file():
                raise ArtifactUnavailableError(f"artifact {data['artifact']} is not sealed here")
        if VERSION_SEP in found.name:
            base_name, _, build = found.name.partition(VERSION_SEP)
            validate_template_name(base_name)
            parent = self._dir / VERSIONS_DIR / base_name
            final = parent / build
        else:
            validate_template_name(found.name)
            parent, final = self._dir, self._dir / found.name
        parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        staging = parent / f".tmp-{final.name}-fetch-{uuid.uuid4().hex[:8]}"
        staging.mkdir(mode=0o755)
        try:
            (staging / "template.json").write_text(json.dumps(data, indent=1) + "\n")
            if final.exists():
                return  # published meanwhile (by this node's own work): keep it
            os.rename(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def clean_incoming(self) -> None:
        """Remove what a crashed fetch left (never a part: parts are renamed in whole)."""
        shutil.rmtree(self._dir / INCOMING_DIR, ignore_errors=True)


def _own_rootfs(store: DirTemplateStore, templates_dir: Path, name: str) -> str:
    """The own-tree rootfs path of base template ``name`` on this node."""
    shared = None if (templates_dir / name).is_dir() else store.shared_dir_of(name)
    return str((shared or templates_dir) / name / "rootfs")
