"""The shared artifact directory (ADR 0029 addendum): two templates homes and one shared
directory, the real ``Exporter``/``Fetcher``/``ArtifactDir``. A template published by one
home is fetched by the other after the first is gone, parts shared between templates are
stored once, a corrupted part is refused with nothing left, and a delete takes the
manifest and the parts no other manifest names."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest

from hutch.node.settings import NodeSettings
from hutch.node.templates.artifact import DirTemplateStore
from hutch.node.templates.artifact_dir import ArtifactDir
from hutch.node.templates.manager import TemplateManager
from hutch.node.templates.transfer import Exporter, Fetcher
from hutch.shared.errors import ArtifactUnavailableError
from tests.unit.node.test_artifact_transfer import FP, SOURCE, _peer, _source_home, _tree


class _Unreachable(httpx.AsyncBaseTransport):
    """A peer that is gone: every request fails to connect."""

    def __init__(self) -> None:
        self.calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        raise httpx.ConnectError("connection refused", request=request)


def _dir(shared: Path, home: Path) -> ArtifactDir:
    return ArtifactDir(shared, Exporter(DirTemplateStore(home), home))


def _parts(shared: Path) -> list[str]:
    return sorted(p.name for p in (shared / "parts").iterdir())


@pytest.fixture
def homes(tmp_path: Path) -> tuple[Path, Path, Path]:
    a, b = tmp_path / "a" / "templates", tmp_path / "b" / "templates"
    shared = tmp_path / "shared"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    shared.mkdir()
    _source_home(a)
    return a, b, shared


async def test_artifact_dir_a_snapshot_outlives_the_node_that_published_it(
    homes: tuple[Path, Path, Path],
) -> None:
    a, b, shared = homes
    published = _dir(shared, a)
    await published.publish("img")
    await published.publish("snap-1")
    # The image's tree is one part for both templates: stored once.
    assert sorted(p.name for p in (shared / "manifests").iterdir()) == ["img.json", "snap-1.json"]
    assert len(_parts(shared)) == 2
    assert not any((shared / ".tmp").iterdir())
    record = json.loads((shared / "manifests" / "snap-1.json").read_text())
    assert set(record["digests"]) == {f"artifact/{FP}", "layer/snap-1"}
    want_image, want_layer = _tree(a / ".artifacts" / FP), _tree(a / ".snapshots" / "snap-1")
    shutil.rmtree(a)  # the node that took the snapshot is gone, with its disk

    dead = _Unreachable()
    fetcher = Fetcher(DirTemplateStore(b), b, token="t", transport=lambda _src: dead,
                      artifact_dir=_dir(shared, b))  # fmt: skip
    fetched = await fetcher.ensure("snap-1", [SOURCE])
    assert fetched is not None and fetched.source == f"dir:{shared}" and fetched.bytes > 0
    assert dead.calls == 0  # the directory first: the peer was never asked
    got = await DirTemplateStore(b).get("snap-1")
    assert got.layers == (b / ".snapshots" / "snap-1" / "layer",)
    assert got.rootfs == b / ".artifacts" / FP / "rootfs"
    assert _tree(b / ".artifacts" / FP) == want_image
    assert _tree(b / ".snapshots" / "snap-1") == want_layer
    assert not any((b / ".incoming").iterdir())
    assert await fetcher.ensure("snap-1", []) is None  # held now


async def test_artifact_dir_a_corrupted_part_is_refused_and_a_peer_serves_it(
    homes: tuple[Path, Path, Path],
) -> None:
    a, b, shared = homes
    await _dir(shared, a).publish("img")
    (part,) = (shared / "parts").iterdir()
    body = bytearray(part.read_bytes())
    body[600] ^= 0xFF
    part.write_bytes(bytes(body))

    fetcher = Fetcher(DirTemplateStore(b), b, token="t", artifact_dir=_dir(shared, b))
    with pytest.raises(ArtifactUnavailableError, match="digest") as refused:
        await fetcher.ensure("img", [])
    assert "artifact directory" in refused.value.message
    assert not (b / ".artifacts" / FP).exists() and not (b / "img").exists()
    assert not any((b / ".incoming").iterdir())
    # A live peer still serves it: the directory is tried first, the peers next.
    app = _peer(a)
    fetcher = Fetcher(DirTemplateStore(b), b, token="t", artifact_dir=_dir(shared, b),
                      transport=lambda _src: httpx.ASGITransport(app=app))  # fmt: skip
    fetched = await fetcher.ensure("img", [SOURCE])
    assert fetched is not None and fetched.source == SOURCE
    assert _tree(b / ".artifacts" / FP) == _tree(a / ".artifacts" / FP)


async def test_artifact_dir_a_template_not_published_refuses_typed(
    homes: tuple[Path, Path, Path],
) -> None:
    _a, b, shared = homes
    fetcher = Fetcher(DirTemplateStore(b), b, token="t", artifact_dir=_dir(shared, b))
    with pytest.raises(ArtifactUnavailableError, match="not in the artifact directory") as no:
        await fetcher.ensure("img", [])
    assert no.value.retryable is True
    assert sorted(p.name for p in b.iterdir() if not p.name.startswith(".")) == []


async def test_artifact_dir_delete_takes_the_manifest_and_unshared_parts(
    homes: tuple[Path, Path, Path],
) -> None:
    a, _b, shared = homes
    store = _dir(shared, a)
    await store.publish("snap-1")  # publishes nothing else: its image is a part of it
    await store.publish("img")
    templates = TemplateManager(templates_dir=a, envd_bundle=a / "envd", artifact_dir=store)
    await templates.delete("snap-1")  # the node's delete, as the api's DELETE runs it
    assert not (shared / "manifests" / "snap-1.json").exists()
    assert not (a / "snap-1").exists()
    assert len(_parts(shared)) == 1  # the layer went; the image is img's still
    await templates.delete("img")
    await templates.delete("img")  # idempotent
    assert _parts(shared) == [] and list((shared / "manifests").iterdir()) == []


def test_artifact_dir_setting_empty_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUTCH_NODE_ARTIFACT_DIR", "")
    assert NodeSettings().artifact_dir is None
    monkeypatch.setenv("HUTCH_NODE_ARTIFACT_DIR", "/mnt/hutch-artifacts")
    assert NodeSettings().artifact_dir == Path("/mnt/hutch-artifacts")


async def test_artifact_dir_a_snapshot_of_an_own_tree_template_brings_its_base(
    tmp_path: Path,
) -> None:
    """A snapshot of a template with its own tree (``base``, an SDK build): its base is
    published with it, and a node that has neither gets both from the directory."""
    a, b, shared = tmp_path / "a", tmp_path / "b", tmp_path / "shared"
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

    await _dir(shared, a).publish("snap-t")
    assert sorted(p.name for p in (shared / "manifests").iterdir()) == ["snap-t.json", "tbase.json"]
    shutil.rmtree(a)
    fetcher = Fetcher(DirTemplateStore(b), b, token="t", artifact_dir=_dir(shared, b))
    assert await fetcher.ensure("snap-t", []) is not None
    got = await DirTemplateStore(b).get("snap-t")
    assert got.rootfs == b / "tbase" / "rootfs"
    assert (got.rootfs / "etc" / "os").read_text() == "own tree\n"
    assert (got.layers[0] / "state").read_text() == "changed in the sandbox\n"
