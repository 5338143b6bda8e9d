"""WatchDir (async SDK, raw Connect stream) and the polling watchers of the sync SDK."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from e2b import FilesystemEventType
from e2b.exceptions import FileNotFoundException, InvalidArgumentException

from tests.conftest import EnvdProcess
from tests.integration.envd.filesystem.conftest import (
    assert_healthy,
    open_stream,
    stream_frames,
    unary,
)

#: Generous bound for events to arrive; never asserted on, only waited up to.
PATIENCE_S = 15.0


async def until(condition: Callable[[], bool]) -> None:
    """Wait (asynchronously) until ``condition()`` holds, failing after PATIENCE_S."""
    deadline = time.monotonic() + PATIENCE_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached")
        await asyncio.sleep(0.02)


def until_sync(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached")
        time.sleep(0.02)


def inotify_fds(envd: EnvdProcess) -> int:
    """How many inotify instances the envd process holds open."""
    fd_dir = f"/proc/{envd.process.pid}/fd"
    count = 0
    for fd in os.listdir(fd_dir):
        try:
            if os.readlink(f"{fd_dir}/{fd}") == "anon_inode:inotify":
                count += 1
        except OSError:
            continue
    return count


def seen(events: list, name: str, kind: FilesystemEventType) -> bool:
    return any(e.name == name and e.type == kind for e in events)


async def test_async_watch_reports_create_write_rename_chmod_remove(
    async_sandbox, tmp_path: Path
) -> None:
    events: list = []
    handle = await async_sandbox.files.watch_dir(str(tmp_path), events.append)
    try:
        (tmp_path / "f").write_text("one")
        await until(lambda: seen(events, "f", FilesystemEventType.WRITE))
        assert seen(events, "f", FilesystemEventType.CREATE)
        os.chmod(tmp_path / "f", 0o600)
        await until(lambda: seen(events, "f", FilesystemEventType.CHMOD))
        os.rename(tmp_path / "f", tmp_path / "g")
        await until(lambda: seen(events, "g", FilesystemEventType.CREATE))
        assert seen(events, "f", FilesystemEventType.RENAME)
        os.unlink(tmp_path / "g")
        await until(lambda: seen(events, "g", FilesystemEventType.REMOVE))
        assert all(e.entry is None for e in events)  # include_entry not asked
    finally:
        await handle.stop()


async def test_async_watch_include_entry(async_sandbox, envd: EnvdProcess, tmp_path: Path) -> None:
    events: list = []
    handle = await async_sandbox.files.watch_dir(str(tmp_path), events.append, include_entry=True)
    try:
        (tmp_path / "keep").mkdir()
        await until(lambda: seen(events, "keep", FilesystemEventType.CREATE))
        created = next(e for e in events if e.name == "keep")
        assert created.entry is not None
        assert created.entry.path == str(tmp_path / "keep")
        assert created.entry.permissions.startswith("d")
        os.rmdir(tmp_path / "keep")
        await until(lambda: seen(events, "keep", FilesystemEventType.REMOVE))
        removed = [e for e in events if e.type == FilesystemEventType.REMOVE]
        assert removed[0].entry is None  # nothing left to describe
    finally:
        await handle.stop()
    await until(lambda: inotify_fds(envd) == 0)


async def test_async_watch_recursive_follows_new_subdirectories(
    async_sandbox, tmp_path: Path
) -> None:
    (tmp_path / "old").mkdir()
    events: list = []
    handle = await async_sandbox.files.watch_dir(str(tmp_path), events.append, recursive=True)
    try:
        (tmp_path / "old" / "a").write_text("a")
        await until(lambda: seen(events, "old/a", FilesystemEventType.CREATE))
        (tmp_path / "new").mkdir()
        await until(lambda: seen(events, "new", FilesystemEventType.CREATE))
        (tmp_path / "new" / "b").write_text("b")
        await until(lambda: seen(events, "new/b", FilesystemEventType.WRITE))
        # made in one go, before any watch could be added below "p": still reported
        os.makedirs(tmp_path / "p" / "q" / "r")
        (tmp_path / "p" / "q" / "r" / "c").write_text("c")
        await until(lambda: seen(events, "p/q/r/c", FilesystemEventType.CREATE))
    finally:
        await handle.stop()


async def test_async_watch_not_recursive_ignores_subdirectories(
    async_sandbox, tmp_path: Path
) -> None:
    (tmp_path / "sub").mkdir()
    events: list = []
    handle = await async_sandbox.files.watch_dir(str(tmp_path), events.append)
    try:
        (tmp_path / "sub" / "hidden").write_text("x")
        (tmp_path / "marker").write_text("m")
        await until(lambda: seen(events, "marker", FilesystemEventType.CREATE))
        assert not any(e.name.startswith("sub/") for e in events)
    finally:
        await handle.stop()


async def test_async_watch_errors(async_sandbox, envd: EnvdProcess, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("f")
    with pytest.raises(InvalidArgumentException):
        await async_sandbox.files.watch_dir(str(tmp_path / "file"), lambda e: None)
    with pytest.raises(FileNotFoundException):
        await async_sandbox.files.watch_dir(str(tmp_path / "missing"), lambda e: None)
    assert inotify_fds(envd) == 0
    assert_healthy(envd)


def test_sync_watch_polls_events_and_stops(sandbox, envd: EnvdProcess, tmp_path: Path) -> None:
    handle = sandbox.files.watch_dir(str(tmp_path), recursive=True)
    assert inotify_fds(envd) == 1
    (tmp_path / "a").write_text("a")
    got: list = []
    until_sync(
        lambda: (
            seen(got, "a", FilesystemEventType.WRITE) or bool(got.extend(handle.get_new_events()))
        )
    )
    assert seen(got, "a", FilesystemEventType.CREATE)
    (tmp_path / "d").mkdir()
    (tmp_path / "b").write_text("b")
    later: list = []
    until_sync(
        lambda: (
            seen(later, "b", FilesystemEventType.CREATE)
            or bool(later.extend(handle.get_new_events()))
        )
    )
    assert not any(e.name == "a" for e in later)  # only events since the last call
    handle.stop()
    assert inotify_fds(envd) == 0


def test_polling_watcher_errors(envd: EnvdProcess, tmp_path: Path) -> None:
    r = unary(envd, "GetWatcherEvents", {"watcherId": "w-unknown"})
    assert (r.status_code, r.json()["code"]) == (404, "not_found")
    r = unary(envd, "RemoveWatcher", {"watcherId": "w-unknown"})
    assert r.json()["code"] == "not_found"
    (tmp_path / "file").write_text("f")
    r = unary(envd, "CreateWatcher", {"path": str(tmp_path / "file")})
    assert r.json()["code"] == "invalid_argument"
    r = unary(envd, "CreateWatcher", {"path": str(tmp_path / "missing")})
    assert r.json()["code"] == "not_found"
    watcher_id = unary(envd, "CreateWatcher", {"path": str(tmp_path)}).json()["watcherId"]
    assert unary(envd, "RemoveWatcher", {"watcherId": watcher_id}).status_code == 200
    r = unary(envd, "GetWatcherEvents", {"watcherId": watcher_id})
    assert r.json()["code"] == "not_found"
    assert inotify_fds(envd) == 0
    assert_healthy(envd)


def test_stream_starts_at_once_and_sends_keepalives(
    client: httpx.Client, envd: EnvdProcess, tmp_path: Path
) -> None:
    headers = {"Keepalive-Ping-Interval": "1"}
    with open_stream(client, envd, "WatchDir", {"path": str(tmp_path)}, headers=headers) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/connect+json"
        frames = stream_frames(r)
        assert next(frames) == (0, {"start": {}})
        assert next(frames) == (0, {"keepalive": {}})
        (tmp_path / "x").write_text("x")
        _flags, message = next(frames)
        while "keepalive" in message:
            _flags, message = next(frames)
        assert message["filesystem"] == {"name": "x", "type": "EVENT_TYPE_CREATE"}
    # the client hung up while the watch was idle: the inotify instance goes away
    until_sync(lambda: inotify_fds(envd) == 0)


def test_idle_stream_is_released_when_the_client_goes_away(
    client: httpx.Client, envd: EnvdProcess, tmp_path: Path
) -> None:
    # No Keepalive-Ping-Interval: envd's default is 90 s, far beyond PATIENCE_S, so only
    # noticing the disconnect itself can release the watch in time.
    with open_stream(client, envd, "WatchDir", {"path": str(tmp_path), "recursive": True}) as r:
        frames = stream_frames(r)  # kept: dropping it would close the response early
        assert next(frames) == (0, {"start": {}})
        assert inotify_fds(envd) == 1
    until_sync(lambda: inotify_fds(envd) == 0)
    assert_healthy(envd)


def test_stream_include_entry_over_the_wire(
    client: httpx.Client, envd: EnvdProcess, tmp_path: Path
) -> None:
    message = {"path": str(tmp_path), "includeEntry": True}
    with open_stream(client, envd, "WatchDir", message) as r:
        frames = stream_frames(r)
        assert next(frames)[1] == {"start": {}}
        (tmp_path / "y").write_text("y")
        event = next(frames)[1]["filesystem"]
        assert event["name"] == "y" and event["type"] == "EVENT_TYPE_CREATE"
        assert event["entry"]["path"] == str(tmp_path / "y")
        assert event["entry"]["type"] == "FILE_TYPE_FILE"


@pytest.mark.parametrize(
    ("target", "code"), [("file", "invalid_argument"), ("missing", "not_found")]
)
def test_stream_errors_end_the_stream(
    client: httpx.Client, envd: EnvdProcess, tmp_path: Path, target: str, code: str
) -> None:
    (tmp_path / "file").write_text("f")
    with open_stream(client, envd, "WatchDir", {"path": str(tmp_path / target)}) as r:
        frames = list(stream_frames(r))
    assert r.status_code == 200
    assert len(frames) == 1
    flags, end = frames[0]
    assert flags == 2
    assert end["error"]["code"] == code
    assert_healthy(envd)


def test_stream_ends_when_the_watched_directory_is_removed(
    client: httpx.Client, envd: EnvdProcess, tmp_path: Path
) -> None:
    watched = tmp_path / "w"
    watched.mkdir()
    with open_stream(client, envd, "WatchDir", {"path": str(watched)}) as r:
        frames = stream_frames(r)
        assert next(frames)[1] == {"start": {}}
        os.rmdir(watched)
        rest = list(frames)
    assert rest[-1] == (2, {})
    until_sync(lambda: inotify_fds(envd) == 0)


def test_stream_deadline_ends_with_deadline_exceeded(
    client: httpx.Client, envd: EnvdProcess, tmp_path: Path
) -> None:
    headers = {"Connect-Timeout-Ms": "300"}
    with open_stream(client, envd, "WatchDir", {"path": str(tmp_path)}, headers=headers) as r:
        frames = list(stream_frames(r))
    assert frames[0] == (0, {"start": {}})
    assert frames[-1][0] == 2
    assert frames[-1][1]["error"]["code"] == "deadline_exceeded"
    until_sync(lambda: inotify_fds(envd) == 0)


def test_malformed_stream_body_is_invalid_argument(client: httpx.Client, envd: EnvdProcess) -> None:
    headers = {"Content-Type": "application/connect+json", "Connect-Protocol-Version": "1"}
    body = b"\x00\x00\x00\x00\x05{nope"
    url = envd.url + "/filesystem.Filesystem/WatchDir"
    r = client.post(url, content=body, headers=headers)
    frames = list(stream_frames(r))
    assert frames[-1][0] == 2
    assert frames[-1][1]["error"]["code"] == "invalid_argument"
    assert inotify_fds(envd) == 0
    assert_healthy(envd)
