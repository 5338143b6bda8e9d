"""What watchers see while envd writes files: E2B's in-place events, never the temp file.

A sentinel directory made after each write bounds the wait: one inotify queue keeps its
order, so once the sentinel's CREATE has arrived, every event of the write has too.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from e2b import FilesystemEventType as T

from hutch.envd.filesystem.publications import Publications
from hutch.envd.filesystem.watcher import DirWatch
from hutch.envd.filesystem.writer import create_temp, finalize, prepare_target, write_buffers
from hutch.envd.users import get_user
from tests.integration.envd.filesystem.test_watch import until, until_sync

CREATE, WRITE, CHMOD = T.CREATE, T.WRITE, T.CHMOD


def _names(events: list) -> list[str]:
    return [e.name for e in events]


def _of(events: list, name: str) -> list:
    return [e.type for e in events if e.name == name]


async def _settle(files, directory: Path, events: list) -> None:
    """Make a sentinel and wait for its event: all earlier events are then in ``events``."""
    sentinel = f"zz-sentinel-{uuid.uuid4().hex[:6]}"
    await files.make_dir(str(directory / sentinel))
    await until(lambda: sentinel in _names(events))


async def test_new_and_replaced_files_show_e2bs_events(async_sandbox, tmp_path: Path) -> None:
    files = async_sandbox.files
    events: list = []
    handle = await files.watch_dir(str(tmp_path), events.append, include_entry=True)
    try:
        await files.write(str(tmp_path / "new.txt"), "fresh")
        await _settle(files, tmp_path, events)
        assert _of(events, "new.txt") == [CREATE, CHMOD, WRITE]
        await files.write(str(tmp_path / "new.txt"), "replaced!")
        await files.write(str(tmp_path / "tagged.txt"), "t", metadata={"team": "blue"})
        await files.write(str(tmp_path / "empty.txt"), "")
        await _settle(files, tmp_path, events)
    finally:
        await handle.stop()
    assert _of(events, "new.txt") == [CREATE, CHMOD, WRITE, CHMOD, WRITE]
    replaced = [e for e in events if e.name == "new.txt"][-1]
    assert replaced.entry is not None and replaced.entry.size == len("replaced!")
    assert _of(events, "tagged.txt") == [CREATE, CHMOD, WRITE, CHMOD]
    assert _of(events, "empty.txt") == [CREATE, CHMOD]
    assert not any("hutch-upload" in e.name for e in events), _names(events)
    assert {e.entry.path for e in events if e.name == "tagged.txt"} == {
        str(tmp_path / "tagged.txt")
    }


async def test_recursive_watch_names_uploads_relative(async_sandbox, tmp_path: Path) -> None:
    files = async_sandbox.files
    (tmp_path / "nested").mkdir()
    events: list = []
    handle = await files.watch_dir(str(tmp_path), events.append, recursive=True)
    try:
        await files.write(str(tmp_path / "nested" / "file.txt"), "n")
        await files.write(str(tmp_path / "fresh" / "deep" / "file.txt"), "f")  # parents made
        await _settle(files, tmp_path, events)
        await files.write(str(tmp_path / "nested" / "file.txt"), "again")
        await _settle(files, tmp_path, events)
    finally:
        await handle.stop()
    assert _of(events, "nested/file.txt") == [CREATE, CHMOD, WRITE, CHMOD, WRITE]
    # Parents made by the write show as E2B's EnsureDirs does (mkdir, chown), then the file.
    assert _of(events, "fresh") == [CREATE, CHMOD]
    assert _of(events, "fresh/deep/file.txt") == [CREATE, CHMOD, WRITE]
    assert not any("hutch-upload" in e.name for e in events), _names(events)


def test_polling_watcher_sees_the_same(sandbox, tmp_path: Path) -> None:
    handle = sandbox.files.watch_dir(str(tmp_path))
    got: list = []
    try:
        sandbox.files.write_files(
            [
                {"path": str(tmp_path / "a.txt"), "data": "a"},
                {"path": str(tmp_path / "b.txt"), "data": "b"},
            ]
        )
        sandbox.files.write(str(tmp_path / "a.txt"), "aa")
        sandbox.files.make_dir(str(tmp_path / "zz"))
        until_sync(lambda: "zz" in _names(got) or bool(got.extend(handle.get_new_events())))
    finally:
        handle.stop()
    assert _of(got, "a.txt") == [CREATE, CHMOD, WRITE, CHMOD, WRITE]
    assert _of(got, "b.txt") == [CREATE, CHMOD, WRITE]
    assert not any("hutch-upload" in e.name for e in got), _names(got)


async def test_upload_renamed_before_its_directory_is_watched(tmp_path: Path) -> None:
    """The race a recursive watch has with a write that makes its parent: the file may be
    in place before the new directory's watch exists. It is still shown as its upload,
    once, while a file moved in with a tree is a plain CREATE."""
    publications = Publications()
    watch = DirWatch(str(tmp_path), recursive=True, include_entry=False, publications=publications)
    watch.start()
    try:
        # All synchronous: the watch cannot read its queue until this test yields.
        target = prepare_target(str(tmp_path / "made" / "f.txt"), user=get_user("root"))
        fd, temp = create_temp(target)
        write_buffers(fd, [b"data"], offset=None, what=target.path)
        finalize(fd, temp, target, metadata={}, publications=publications)
        outside = tmp_path.parent / f"{tmp_path.name}-outside"
        (outside / "tree").mkdir(parents=True)
        (outside / "tree" / "g.txt").write_text("g")
        os.rename(outside / "tree", tmp_path / "tree")
        outside.rmdir()
        os.mkdir(tmp_path / "zz")
        events: list = []
        while "zz" not in [e.name for e in events]:
            await watch.wait(5.0)
            events += watch.drain()
    finally:
        watch.close()
    kinds = [(e.name, e.kind.value) for e in events]
    assert [k for n, k in kinds if n == "made/f.txt"] == ["create", "chmod", "write"], kinds
    assert [k for n, k in kinds if n == "tree/g.txt"] == ["create"], kinds
    assert not any("hutch-upload" in n for n, _ in kinds), kinds
