"""The async SDK over the same surface as ``test_sdk_surface_sync.py``."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from e2b import (
    AsyncSandbox,
    CommandExitException,
    FilesystemEvent,
    FilesystemEventType,
    PtySize,
    SandboxQuery,
    SandboxState,
)

from .serveproc import Serve

pytestmark = pytest.mark.root


async def _until(check, *, attempts: int = 200) -> bool:  # type: ignore[no-untyped-def]
    """Poll ``check()`` (a count of tries, not a deadline)."""
    for _ in range(attempts):
        if check():
            return True
        await asyncio.sleep(0.05)
    return check()


@pytest.mark.compat("async")
async def test_async_pty_stdin_background_watch(serve: Serve) -> None:
    sbx = await AsyncSandbox.create("busybox", timeout=120)
    try:
        out = bytearray()
        term = await sbx.pty.create(PtySize(rows=24, cols=80), on_data=out.extend)
        await sbx.pty.resize(term.pid, PtySize(rows=33, cols=99))
        await sbx.pty.send_stdin(term.pid, b"stty size; echo $((6*7))y; exit\n")
        assert (await term.wait()).exit_code == 0
        assert "33 99" in out.decode() and "42y" in out.decode(), out

        other = await sbx.pty.create(PtySize(rows=24, cols=80), on_data=lambda _: None)
        assert await other.kill() is True
        with pytest.raises(CommandExitException):
            await other.wait()

        cat = await sbx.commands.run("cat", background=True, stdin=True)
        await sbx.commands.send_stdin(cat.pid, "async ")
        await cat.send_stdin("stdin\n")
        await cat.close_stdin()
        assert (await cat.wait()).stdout == "async stdin\n"

        lines: list[str] = []
        sleeper = await sbx.commands.run(
            "echo up; sleep 600", background=True, on_stdout=lines.append
        )
        assert await _until(lambda: lines == ["up\n"])
        assert await sbx.commands.kill(sleeper.pid) is True
        with pytest.raises(CommandExitException):
            await sleeper.wait()

        events: list[FilesystemEvent] = []
        await sbx.files.make_dir("/tmp/w")
        watch = await sbx.files.watch_dir("/tmp/w", on_event=events.append)
        try:
            await sbx.files.write("/tmp/w/b.txt", "x")
            assert await _until(
                lambda: any(
                    e.name == "b.txt" and e.type == FilesystemEventType.CREATE for e in events
                )
            ), events
        finally:
            await watch.stop()
    finally:
        await sbx.kill()


@pytest.mark.compat("async")
async def test_async_connect_list_metadata_timeout_info(serve: Serve) -> None:
    tag = uuid.uuid4().hex[:8]
    made = [
        await AsyncSandbox.create("busybox", metadata={"tag": tag, "i": str(i)}, timeout=120)
        for i in range(3)
    ]
    try:
        again = await AsyncSandbox.connect(made[0].sandbox_id)
        await again.files.write("/tmp/m.txt", "meta", metadata={"who": "async"})
        assert (await made[0].files.get_info("/tmp/m.txt")).metadata == {"who": "async"}

        await made[0].set_timeout(40)
        info = await made[0].get_info()
        assert info.metadata == {"tag": tag, "i": "0"}
        assert info.end_at - info.started_at < timedelta(seconds=120)

        paginator = AsyncSandbox.list(
            query=SandboxQuery(metadata={"tag": tag}, state=[SandboxState.RUNNING]), limit=2
        )
        seen: list[str] = []
        while paginator.has_next:
            page = await paginator.next_items()
            assert len(page) <= 2
            seen += [s.sandbox_id for s in page]
        assert seen == [s.sandbox_id for s in reversed(made)]
    finally:
        for s in made:
            await s.kill()
    left = await AsyncSandbox.list(query=SandboxQuery(metadata={"tag": tag})).next_items()
    assert left == []
