"""The artifact store (ADR 0029 addendum and amendment), each test on both adapters: the
shared directory and an S3 bucket of a real moto server on loopback; two templates homes,
the real ``Exporter``/``Fetcher``/``ContentStore``. A template published by one home is
fetched by the other after the first is gone (no peer asked), parts shared between
templates are stored once, a corrupted part is refused with nothing left, a part that
does not hash to its digest is never stored, and a delete takes the manifest and the parts
no other manifest names."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import httpx
import pytest

from hutch.node.templates.artifact import DirTemplateStore
from hutch.node.templates.artifact_store import manifest_key, part_key
from hutch.node.templates.manager import TemplateManager
from hutch.node.templates.transfer import Fetcher
from hutch.shared.errors import ArtifactUnavailableError
from tests.integration.artifacts.conftest import Shared
from tests.unit.node.test_artifact_transfer import FP, SOURCE, _peer, _source_home, _tree


class _Unreachable(httpx.AsyncBaseTransport):
    """A peer that is gone: every request fails to connect."""

    def __init__(self) -> None:
        self.calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        raise httpx.ConnectError("connection refused", request=request)


def _parts(shared: Shared) -> list[str]:
    return shared.blobs().list("parts")


def _manifests(shared: Shared) -> list[str]:
    return shared.blobs().list("manifests")


def _half_written(shared: Shared, tmp: Path) -> list[str]:
    """What a write left that is not a blob: temporary files, unfinished uploads."""
    if shared.kind == "s3":
        uploads = shared.client.list_multipart_uploads(Bucket=shared.bucket)
        return [u["Key"] for u in uploads.get("Uploads", [])]
    return [p.name for p in (tmp / "shared" / ".tmp").glob("*")]


@pytest.fixture
def homes(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "a" / "templates", tmp_path / "b" / "templates"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    _source_home(a)
    return a, b


async def test_artifact_store_a_snapshot_outlives_the_node_that_published_it(
    homes: tuple[Path, Path], shared: Shared, tmp_path: Path
) -> None:
    a, b = homes
    published = shared.view(a)
    await published.publish("img")
    await published.publish("snap-1")
    # The image's tree is one part for both templates: stored once.
    assert _manifests(shared) == ["img.json", "snap-1.json"]
    assert len(_parts(shared)) == 2
    assert _half_written(shared, tmp_path) == []
    record = json.loads(shared.blobs().read(manifest_key("snap-1")) or b"")
    assert set(record["digests"]) == {f"artifact/{FP}", "layer/snap-1"}
    want_image, want_layer = _tree(a / ".artifacts" / FP), _tree(a / ".snapshots" / "snap-1")
    shutil.rmtree(a)  # the node that took the snapshot is gone, with its disk

    dead = _Unreachable()
    store = shared.view(b)
    fetcher = Fetcher(DirTemplateStore(b), b, token="t", transport=lambda _src: dead,
                      artifact_store=store)  # fmt: skip
    fetched = await fetcher.ensure("snap-1", [SOURCE])
    assert fetched is not None and fetched.source == store.label and fetched.bytes > 0
    assert dead.calls == 0  # the store first: the peer was never asked
    got = await DirTemplateStore(b).get("snap-1")
    assert got.layers == (b / ".snapshots" / "snap-1" / "layer",)
    assert got.rootfs == b / ".artifacts" / FP / "rootfs"
    assert _tree(b / ".artifacts" / FP) == want_image
    assert _tree(b / ".snapshots" / "snap-1") == want_layer
    assert not any((b / ".incoming").iterdir())
    assert await fetcher.ensure("snap-1", []) is None  # held now


async def test_artifact_store_a_corrupted_part_is_refused_and_a_peer_serves_it(
    homes: tuple[Path, Path], shared: Shared
) -> None:
    a, b = homes
    await shared.view(a).publish("img")
    (part,) = _parts(shared)
    blobs = shared.blobs()
    body = bytearray(blobs.read(f"parts/{part}") or b"")
    body[600] ^= 0xFF
    blobs.write(f"parts/{part}", bytes(body))  # rot in the store, under the same name

    fetcher = Fetcher(DirTemplateStore(b), b, token="t", artifact_store=shared.view(b))
    with pytest.raises(ArtifactUnavailableError, match="digest") as refused:
        await fetcher.ensure("img", [])
    assert blobs.kind in refused.value.message
    assert not (b / ".artifacts" / FP).exists() and not (b / "img").exists()
    assert not any((b / ".incoming").iterdir())
    # A live peer still serves it: the store is tried first, the peers next.
    app = _peer(a)
    fetcher = Fetcher(DirTemplateStore(b), b, token="t", artifact_store=shared.view(b),
                      transport=lambda _src: httpx.ASGITransport(app=app))  # fmt: skip
    fetched = await fetcher.ensure("img", [SOURCE])
    assert fetched is not None and fetched.source == SOURCE
    assert _tree(b / ".artifacts" / FP) == _tree(a / ".artifacts" / FP)


async def test_artifact_store_a_template_not_published_refuses_typed(
    homes: tuple[Path, Path], shared: Shared
) -> None:
    _a, b = homes
    store = shared.view(b)
    fetcher = Fetcher(DirTemplateStore(b), b, token="t", artifact_store=store)
    with pytest.raises(ArtifactUnavailableError, match=f"not in the {store.blobs.kind}") as no:
        await fetcher.ensure("img", [])
    assert no.value.retryable is True
    assert sorted(p.name for p in b.iterdir() if not p.name.startswith(".")) == []


async def test_artifact_store_a_part_that_does_not_hash_to_its_digest_is_never_stored(
    homes: tuple[Path, Path], shared: Shared, tmp_path: Path
) -> None:
    """The digest a publish names a part by is the one the exporter computed; a tree that
    changed since (a bad disk, a bug) writes other bytes: the write is refused whole, a
    multipart upload aborted, and no manifest names the part."""
    a, _b = homes
    big = a / ".artifacts" / FP / "rootfs" / "big.bin"
    big.write_text(os.urandom(6 << 20).hex())  # 12 MiB: three upload parts on S3
    store = shared.view(a)
    await store._exporter.part("img", "artifact", FP)  # the digest, kept
    with big.open("r+b") as out:
        out.seek(11 << 20)
        out.write(b"changed after its digest")
    await store.publish_quietly("img")  # logged, not raised: the template stays usable
    assert _parts(shared) == [] and _manifests(shared) == []
    assert _half_written(shared, tmp_path) == []


async def test_artifact_store_delete_takes_the_manifest_and_unshared_parts(
    homes: tuple[Path, Path], shared: Shared
) -> None:
    a, _b = homes
    store = shared.view(a)
    await store.publish("snap-1")  # publishes nothing else: its image is a part of it
    await store.publish("img")
    templates = TemplateManager(templates_dir=a, envd_bundle=a / "envd", artifact_store=store)
    await templates.delete("snap-1")  # the node's delete, as the api's DELETE runs it
    assert not await store.has("snap-1")
    assert not (a / "snap-1").exists()
    assert len(_parts(shared)) == 1  # the layer went; the image is img's still
    await templates.delete("img")
    await templates.delete("img")  # idempotent
    assert _parts(shared) == [] and _manifests(shared) == []


async def test_artifact_store_delete_takes_kept_builds_and_keeps_other_templates(
    homes: tuple[Path, Path], shared: Shared
) -> None:
    a, _b = homes
    store = shared.view(a)
    await store.publish("img")
    blobs = shared.blobs()
    record = blobs.read(manifest_key("img")) or b""
    blobs.write(manifest_key("img@b1"), record.replace(b'"name": "img"', b'"name": "img@b1"'))
    blobs.write(manifest_key("img2"), record.replace(b'"name": "img"', b'"name": "img2"'))
    await store.remove("img")
    assert _manifests(shared) == ["img2.json"]
    assert len(_parts(shared)) == 1  # img2 names it still
    await store.remove("img2")
    assert _parts(shared) == []


async def test_artifact_store_a_snapshot_of_an_own_tree_template_brings_its_base(
    tmp_path: Path, shared: Shared
) -> None:
    """A snapshot of a template with its own tree (``base``, an SDK build): its base is
    published with it, and a node that has neither gets both from the store."""
    a, b = tmp_path / "a", tmp_path / "b"
    (a / "tbase" / "rootfs" / "etc").mkdir(parents=True)
    (a / "tbase" / "rootfs" / "etc" / "os").write_text("own tree\n")
    base = {"format": 1, "name": "tbase", "default_user": "user", "workdir": "/", "env": {},
            "cpu_count": 1.0, "memory_mb": 256, "build": {}, "image": None,
            "artifact": None, "layers": [], "snapshot_of": None, "alias": None}  # fmt: skip
    (a / "tbase" / "template.json").write_text(json.dumps(base))
    layer = a / ".snapshots" / "snap-t" / "layer"
    layer.mkdir(parents=True)
    (layer / "state").write_text("changed in the sandbox\n")
    snap = {**base, "name": "snap-t", "layers": [str(layer)], "snapshot_of": "tbase",
            "rootfs_path": str(a / "tbase" / "rootfs")}  # fmt: skip
    (a / "snap-t").mkdir()
    (a / "snap-t" / "template.json").write_text(json.dumps(snap))
    b.mkdir()

    await shared.view(a).publish("snap-t")
    assert _manifests(shared) == ["snap-t.json", "tbase.json"]
    shutil.rmtree(a)
    fetcher = Fetcher(DirTemplateStore(b), b, token="t", artifact_store=shared.view(b))
    assert await fetcher.ensure("snap-t", []) is not None
    got = await DirTemplateStore(b).get("snap-t")
    assert got.rootfs == b / "tbase" / "rootfs"
    assert (got.rootfs / "etc" / "os").read_text() == "own tree\n"
    assert (got.layers[0] / "state").read_text() == "changed in the sandbox\n"


async def test_artifact_store_a_template_a_peer_served_is_published(
    homes: tuple[Path, Path], shared: Shared
) -> None:
    """Fetched from a peer (published before the store was set), a template is written to
    the store before the create goes on: the next node gets it there."""
    a, b = homes
    app = _peer(a)
    store = shared.view(b)
    fetcher = Fetcher(DirTemplateStore(b), b, token="t", artifact_store=store,
                      transport=lambda _src: httpx.ASGITransport(app=app))  # fmt: skip
    fetched = await fetcher.ensure("snap-1", [SOURCE])
    assert fetched is not None and fetched.source == SOURCE
    assert await store.has("snap-1")
    assert part_key(json.loads(store.blobs.read(manifest_key("snap-1")) or b"")["digests"][
        "layer/snap-1"]).removeprefix("parts/") in _parts(shared)  # fmt: skip
