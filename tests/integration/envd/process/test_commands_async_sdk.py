"""Commands and terminals through the official asynchronous SDK."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path

import pytest
from e2b import CommandExitException, PtySize, TimeoutException

from tests.integration.envd.process.conftest import pid_alive


async def test_async_run_and_callbacks(async_sandbox) -> None:
    out: list[str] = []
    err: list[str] = []
    result = await async_sandbox.commands.run(
        "echo a; echo b >&2; echo c", on_stdout=out.append, on_stderr=err.append
    )
    assert result.stdout == "a\nc\n"
    assert "".join(out) == "a\nc\n"
    assert "".join(err) == "b\n"


async def test_async_exit_code(async_sandbox) -> None:
    with pytest.raises(CommandExitException) as info:
        await async_sandbox.commands.run("exit 5")
    assert info.value.exit_code == 5


async def test_async_background_stdin_connect_and_kill(async_sandbox) -> None:
    handle = await async_sandbox.commands.run("cat", background=True, stdin=True, timeout=0)
    await async_sandbox.commands.send_stdin(handle.pid, "ping\n")
    await handle.disconnect()
    assert handle.pid in [p.pid for p in await async_sandbox.commands.list()]
    seen: list[str] = []
    again = await async_sandbox.commands.connect(handle.pid, on_stdout=seen.append)
    await async_sandbox.commands.send_stdin(handle.pid, "pong\n")
    await async_sandbox.commands.close_stdin(handle.pid)
    result = await again.wait()
    assert result.stdout.endswith("pong\n")  # "ping" too, if cat echoed it after re-attach
    assert await async_sandbox.commands.kill(handle.pid) is False


async def test_async_deadline(async_sandbox, test_user) -> None:
    # As the test account: a deadline may land while a login shell runs its profile,
    # and root's profile on a dev host may hold locks (pyenv) that a kill leaves behind.
    # 5 s, not 1: a loaded machine's login shell can take a second before the echo, and
    # a deadline that lands first leaves no marker to read.
    marker = Path(test_user.pw_dir) / f"deadline-pid-{uuid.uuid4().hex}"
    with pytest.raises(TimeoutException):
        await async_sandbox.commands.run(
            f"echo $$ > {marker}; exec sleep 30", timeout=5, user=test_user.pw_name
        )
    pid = int(marker.read_text())
    marker.unlink()
    for _ in range(200):
        if not pid_alive(pid):
            break
        await asyncio.sleep(0.05)
    assert not pid_alive(pid)


async def test_async_pty(async_sandbox, test_user) -> None:
    got = bytearray()
    seen = asyncio.Event()

    def on_data(chunk: bytes) -> None:
        got.extend(chunk)
        if re.search(rb"[\r\n]42\r\n", got):
            seen.set()

    handle = await async_sandbox.pty.create(
        PtySize(rows=24, cols=80), on_data=on_data, user=test_user.pw_name
    )
    await async_sandbox.pty.send_stdin(handle.pid, b"echo $((6*7))\n")
    await asyncio.wait_for(seen.wait(), timeout=30)
    assert await async_sandbox.pty.kill(handle.pid)
    with pytest.raises(CommandExitException):
        await handle.wait()
