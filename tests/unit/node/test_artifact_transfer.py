"""Moving artifacts between nodes (ADR 0029): a real export and fetch between two
templates homes through the node API's artifact routes (in-process ASGI, the real
``Exporter``/``Fetcher``): files, modes, owners, hard links, symlinks, devices and xattrs
arrive as they were; a corrupted transfer and a missing source leave nothing behind."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from starlette.applications import Starlette

from hutch.node.http import routes_artifacts
from hutch.node.http.errors import EXCEPTION_HANDLERS
from hutch.node.templates.artifact import DirTemplateStore
from hutch.node.templates.transfer import Exporter, Fetcher, part_dir
from hutch.shared.errors import ArtifactUnavailableError

FP = "f" * 64
SOURCE = "http://peer:5008"


def _tree(root: Path) -> dict[str, tuple[int, int, int, str]]:
    """Everything under ``root``: path → (mode, uid, mtime, content or link or dev)."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            what = "-> " + os.readlink(path)
        elif stat.S_ISREG(st.st_mode):
            what = path.read_text()
        elif stat.S_ISCHR(st.st_mode):
            what = f"chr {os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
        else:
            what = "dir"
        out[str(path.relative_to(root))] = (st.st_mode, st.st_uid, int(st.st_mtime), what)
    return out


def _source_home(home: Path) -> None:
    """An image template ``img`` (a sealed artifact) and a snapshot ``snap-1`` above it."""
    sealed = home / ".artifacts" / FP
    rootfs = sealed / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "hello").write_text("hello from A\n")
    os.link(rootfs / "etc" / "hello", rootfs / "etc" / "hello.link")
    os.symlink("/etc/hello", rootfs / "hello")
    os.utime(rootfs / "hello", (1_600_000_000, 1_600_000_000), follow_symlinks=False)
    (rootfs / "bin").mkdir()
    (rootfs / "bin" / "tool").write_text("#!/bin/sh\n")
    os.chmod(rootfs / "bin" / "tool", 0o4755)  # setuid kept (an image's su, sudo)
    os.chown(rootfs / "bin" / "tool", 1000, 1000)
    os.utime(rootfs / "etc" / "hello", (1_700_000_000, 1_700_000_000))
    (sealed / "artifact.json").write_text("{}")
    base = {"format": 1, "name": "img", "default_user": "user", "workdir": "/", "env": {},
            "cpu_count": 1.0, "memory_mb": 256, "build": {}, "image": None,
            "artifact": FP, "layers": [], "snapshot_of": None, "alias": None}  # fmt: skip
    (home / "img").mkdir()
    (home / "img" / "template.json").write_text(json.dumps(base))
    layer = home / ".snapshots" / "snap-1" / "layer"
    (layer / "work").mkdir(parents=True)
    (layer / "work" / "notes.txt").write_text("written in the sandbox\n")
    os.mknod(layer / "etc-gone", stat.S_IFCHR | 0o000, os.makedev(0, 0))  # a whiteout
    os.setxattr(layer / "work", "trusted.overlay.opaque", b"y")
    snap = {**base, "name": "snap-1", "layers": [str(layer)], "snapshot_of": "img"}
    (home / "snap-1").mkdir()
    (home / "snap-1" / "template.json").write_text(json.dumps(snap))


def _peer(home: Path) -> Starlette:
    app = Starlette(routes=routes_artifacts.ROUTES, exception_handlers=dict(EXCEPTION_HANDLERS))
    app.state.node = SimpleNamespace(exporter=Exporter(DirTemplateStore(home), home))
    return app


class _Corrupting(httpx.AsyncBaseTransport):
    """The peer's answers with one byte of every part's body flipped."""

    def __init__(self, app: Starlette) -> None:
        self._inner = httpx.ASGITransport(app=app)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if "/parts/" not in request.url.path:
            return response
        body = bytearray(await response.aread())
        body[600] ^= 0xFF
        return httpx.Response(response.status_code, headers=response.headers, content=bytes(body))


@pytest.fixture
def homes(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "a" / "templates", tmp_path / "b" / "templates"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    _source_home(a)
    return a, b


async def test_artifact_transfer_a_snapshot_and_its_image_arrive_whole(
    homes: tuple[Path, Path],
) -> None:
    a, b = homes
    app = _peer(a)
    fetcher = Fetcher(DirTemplateStore(b), b, token="t",
                      transport=lambda _src: httpx.ASGITransport(app=app))  # fmt: skip
    fetched = await fetcher.ensure("snap-1", [SOURCE])
    assert fetched is not None and fetched.source == SOURCE and fetched.bytes > 0
    got = await DirTemplateStore(b).get("snap-1")
    assert got.layers == (b / ".snapshots" / "snap-1" / "layer",)
    assert got.rootfs == b / ".artifacts" / FP / "rootfs"
    assert _tree(b / ".artifacts" / FP) == _tree(a / ".artifacts" / FP)
    assert _tree(b / ".snapshots" / "snap-1") == _tree(a / ".snapshots" / "snap-1")
    assert os.getxattr(got.layers[0] / "work", "trusted.overlay.opaque") == b"y"
    hello = got.rootfs / "etc" / "hello"
    assert hello.stat().st_ino == (got.rootfs / "etc" / "hello.link").stat().st_ino
    assert not (b / ".incoming").exists() or not any((b / ".incoming").iterdir())
    # Held now: a second ensure fetches nothing; the image alone is there too, as a part.
    assert await fetcher.ensure("snap-1", [SOURCE]) is None
    assert part_dir(b, "artifact", FP).is_dir()


async def test_artifact_transfer_a_corrupted_part_never_becomes_a_template(
    homes: tuple[Path, Path],
) -> None:
    a, b = homes
    app = _peer(a)
    fetcher = Fetcher(DirTemplateStore(b), b, token="t", transport=lambda _src: _Corrupting(app))
    with pytest.raises(ArtifactUnavailableError, match="digest"):
        await fetcher.ensure("img", [SOURCE])
    assert not (b / ".artifacts" / FP).exists() and not (b / "img").exists()
    assert not any((b / ".incoming").iterdir())


async def test_artifact_transfer_no_source_or_a_source_without_it_refuses_typed(
    homes: tuple[Path, Path],
) -> None:
    a, b = homes
    app = _peer(a)
    fetcher = Fetcher(DirTemplateStore(b), b, token="t",
                      transport=lambda _src: httpx.ASGITransport(app=app))  # fmt: skip
    with pytest.raises(ArtifactUnavailableError, match="no peer holding it was named"):
        await fetcher.ensure("img", [])
    with pytest.raises(ArtifactUnavailableError, match="404") as missing:
        await fetcher.ensure("nosuch", [SOURCE])
    assert missing.value.retryable is True
    assert sorted(p.name for p in b.iterdir() if not p.name.startswith(".")) == []
