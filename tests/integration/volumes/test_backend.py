"""The ``VolumeBackend`` contract, the same for every backend (``conftest.BACKENDS``)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from hutch.shared.errors import (
    AlreadyExistsError,
    InsufficientStorageError,
    InvalidArgumentError,
    NotFoundError,
)
from hutch.volumes.base import Owner, VolumeBackend

MIB = 1 << 20


async def _chunks(data: bytes, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def _read(
    backend: VolumeBackend, vid: str, rel: str, start: int = 0, end: int | None = None
) -> bytes:
    f = await backend.open_file(vid, rel)
    try:
        return b"".join([c async for c in f.chunks(start, f.size if end is None else end)])
    finally:
        await f.aclose()


async def test_write_read_stat_list(backend: VolumeBackend) -> None:
    await backend.create("vol00000000000000000001", quota_bytes=32 * MIB)
    vid = "vol00000000000000000001"
    data = os.urandom(3 * MIB + 17)
    entry = await backend.write_file(
        vid, "d/e/f.bin", _chunks(data), owner=Owner(), metadata={"k": "v"}
    )
    assert entry.path == "/d/e/f.bin" and entry.name == "f.bin" and entry.size == len(data)
    assert entry.type == "file" and entry.metadata == {"k": "v"}
    assert await _read(backend, vid, "d/e/f.bin") == data
    assert await _read(backend, vid, "d/e/f.bin", 5, 105) == data[5:105]
    st = await backend.stat(vid, "d/e/f.bin")
    assert st.size == len(data) and st.metadata == {"k": "v"}
    assert (await backend.stat(vid, "d")).type == "directory"
    assert (await backend.stat(vid, "")).type == "directory"
    assert [e.path for e in await backend.list_dir(vid, "", depth=1)] == ["/d"]
    assert [e.path for e in await backend.list_dir(vid, "", depth=3)] == [
        "/d",
        "/d/e",
        "/d/e/f.bin",
    ]
    usage = await backend.usage(vid)
    assert usage.used_bytes >= len(data) and 0 < usage.total_bytes <= 32 * MIB


async def test_overwrite_replaces_content_and_metadata(backend: VolumeBackend) -> None:
    vid = "vol00000000000000000002"
    await backend.create(vid, quota_bytes=16 * MIB)
    await backend.write_file(vid, "f", _chunks(b"one"), owner=Owner(), metadata={"a": "1"})
    e = await backend.write_file(vid, "f", _chunks(b"second"), owner=Owner(), metadata={"b": "2"})
    assert e.size == 6 and e.metadata == {"b": "2"}
    assert await _read(backend, vid, "f") == b"second"


async def test_mkdir_remove_move(backend: VolumeBackend) -> None:
    vid = "vol00000000000000000003"
    await backend.create(vid, quota_bytes=16 * MIB)
    with pytest.raises(NotFoundError):
        await backend.make_dir(vid, "a/b", owner=Owner(), parents=False)
    assert (await backend.make_dir(vid, "a/b", owner=Owner(), parents=True)).type == "directory"
    with pytest.raises(AlreadyExistsError):
        await backend.make_dir(vid, "a/b", owner=Owner(), parents=False)
    await backend.make_dir(vid, "a/b", owner=Owner(), parents=True)
    await backend.write_file(vid, "a/b/f", _chunks(b"x"), owner=Owner(), metadata={})
    moved = await backend.move(vid, "a/b/f", "a/g")
    assert moved.path == "/a/g"
    assert await _read(backend, vid, "a/g") == b"x"
    with pytest.raises(NotFoundError):
        await backend.stat(vid, "a/b/f")
    with pytest.raises(AlreadyExistsError):
        await backend.move(vid, "a/g", "a/b")
    await backend.remove(vid, "a")
    with pytest.raises(NotFoundError):
        await backend.stat(vid, "a/g")
    with pytest.raises(NotFoundError):
        await backend.remove(vid, "a")
    with pytest.raises(InvalidArgumentError):
        await backend.remove(vid, "")
    assert await backend.list_dir(vid, "", depth=5) == []


async def test_errors_of_kind(backend: VolumeBackend) -> None:
    vid = "vol00000000000000000004"
    await backend.create(vid, quota_bytes=16 * MIB)
    await backend.make_dir(vid, "dir", owner=Owner(), parents=False)
    await backend.write_file(vid, "file", _chunks(b"x"), owner=Owner(), metadata={})
    with pytest.raises(InvalidArgumentError):
        await backend.write_file(vid, "dir", _chunks(b"x"), owner=Owner(), metadata={})
    with pytest.raises(InvalidArgumentError):
        await backend.open_file(vid, "dir")
    with pytest.raises(InvalidArgumentError):
        await backend.list_dir(vid, "file", depth=1)
    with pytest.raises(NotFoundError):
        await backend.open_file(vid, "missing")
    with pytest.raises(NotFoundError):
        await backend.list_dir(vid, "missing", depth=1)


async def test_set_attrs(backend: VolumeBackend) -> None:
    vid = "vol00000000000000000005"
    await backend.create(vid, quota_bytes=16 * MIB)
    e = await backend.write_file(
        vid, "f", _chunks(b"x"), owner=Owner(uid=5, gid=6, mode=0o600), metadata={}
    )
    assert (e.uid, e.gid, e.mode) == (5, 6, 0o600)
    e = await backend.set_attrs(vid, "f", owner=Owner(mode=0o640))
    assert (e.uid, e.gid, e.mode) == (5, 6, 0o640)
    e = await backend.set_attrs(vid, "f", owner=Owner(uid=7))
    assert (e.uid, e.gid, e.mode) == (7, 6, 0o640)


async def test_quota_is_enforced_and_keeps_stored_data(backend: VolumeBackend) -> None:
    vid = "vol00000000000000000006"
    await backend.create(vid, quota_bytes=8 * MIB)
    keep = os.urandom(2 * MIB)
    await backend.write_file(vid, "keep", _chunks(keep), owner=Owner(), metadata={})
    with pytest.raises(InsufficientStorageError):
        await backend.write_file(
            vid, "keep", _chunks(b"y" * (10 * MIB)), owner=Owner(), metadata={}
        )
    with pytest.raises(InsufficientStorageError):
        await backend.write_file(vid, "new", _chunks(b"y" * (10 * MIB)), owner=Owner(), metadata={})
    assert await _read(backend, vid, "keep") == keep
    assert [e.name for e in await backend.list_dir(vid, "", depth=1)] == ["keep"]
    await backend.write_file(vid, "after", _chunks(b"z" * MIB), owner=Owner(), metadata={})


async def test_delete_removes_everything(backend: VolumeBackend) -> None:
    vid = "vol00000000000000000007"
    await backend.create(vid, quota_bytes=8 * MIB)
    await backend.write_file(vid, "f", _chunks(b"x"), owner=Owner(), metadata={})
    await backend.delete(vid)
    with pytest.raises(NotFoundError):
        await backend.stat(vid, "f")
    await backend.create(vid, quota_bytes=8 * MIB)  # the id can be used again, empty
    assert await backend.list_dir(vid, "", depth=1) == []
