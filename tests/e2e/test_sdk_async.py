"""The async SDK through the whole stack."""

from __future__ import annotations

import asyncio

import pytest
from e2b import AsyncSandbox

from .serveproc import Serve

pytestmark = pytest.mark.root


@pytest.mark.compat("async")
async def test_async_create_run_kill(serve: Serve) -> None:
    sbxs = await asyncio.gather(
        *(AsyncSandbox.create("busybox", envs={"N": str(i)}, timeout=60) for i in range(2))
    )
    try:
        for i, sbx in enumerate(sbxs):
            out: list[str] = []
            result = await sbx.commands.run("echo $N", on_stdout=out.append)
            assert result.stdout == f"{i}\n"
            assert out == [f"{i}\n"]
    finally:
        killed = await asyncio.gather(*(s.kill() for s in sbxs))
    assert killed == [True, True]
    assert await AsyncSandbox.kill(sbxs[0].sandbox_id) is False
