"""Contexts through the official SDK: create, list, run in, restart, remove; bad input."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.interpreter.conftest import Server


def test_context_lifecycle(sbx, server: Server, tmp_path) -> None:
    ctx = sbx.create_code_context(cwd=str(tmp_path))
    assert ctx.language == "python" and ctx.cwd == str(tmp_path)
    assert ctx.id in {c.id for c in sbx.list_code_contexts()}

    assert sbx.run_code("import os; os.getcwd()", context=ctx).text == str(tmp_path)
    sbx.run_code("only_here = 7", context=ctx)
    assert sbx.run_code("only_here", context=ctx).text == "7"
    other = sbx.run_code("only_here")  # the default context does not share it
    assert other.error is not None and other.error.name == "NameError"

    sbx.restart_code_context(ctx)
    lost = sbx.run_code("only_here", context=ctx)
    assert lost.error is not None and lost.error.name == "NameError"
    assert sbx.run_code("import os; os.getcwd()", context=ctx).text == str(tmp_path)

    sbx.remove_code_context(ctx.id)
    assert ctx.id not in {c.id for c in sbx.list_code_contexts()}


def test_default_context_uses_the_server_cwd(sbx, server: Server) -> None:
    assert sbx.run_code("import os; os.getcwd()").text == str(server.cwd)


def test_unknown_context_is_404(sbx) -> None:
    from e2b import NotFoundException
    from e2b_code_interpreter import Context

    ghost = Context("no-such-context", "python", "/")
    with pytest.raises(NotFoundException, match="Context no-such-context not found"):
        sbx.run_code("1", context=ghost)
    with pytest.raises(NotFoundException):
        sbx.restart_code_context("no-such-context")
    with pytest.raises(NotFoundException):
        sbx.remove_code_context("no-such-context")


def test_context_with_a_language_not_installed_is_400(sbx) -> None:
    from e2b import SandboxException

    with pytest.raises(SandboxException, match=r"'fortran' is not installed.*python"):
        sbx.create_code_context(language="fortran")


def test_context_with_a_missing_cwd_is_400(server: Server, tmp_path) -> None:
    resp = httpx.post(server.url + "/contexts", json={"cwd": str(tmp_path / "nope")}, timeout=10)
    assert resp.status_code == 400 and "is not a directory" in resp.text


@pytest.mark.parametrize("body", [b"[]", b"{bad", b'{"language": 5}', b'{"cwd": []}'])
def test_bad_context_bodies_are_400(server: Server, body: bytes) -> None:
    resp = httpx.post(server.url + "/contexts", content=body, timeout=10)
    assert resp.status_code == 400


def test_bash_context_and_language(sbx, tmp_path) -> None:
    execution = sbx.run_code('x=5; echo "x is $x"; pwd', language="bash")
    assert execution.error is None
    assert "".join(execution.logs.stdout).startswith("x is 5\n")
    assert sbx.run_code("echo $x", language="bash").logs.stdout == ["5\n"]
    failed = sbx.run_code("false", language="bash")
    assert failed.error is not None

    ctx = sbx.create_code_context(language="bash", cwd=str(tmp_path))
    assert ctx.language == "bash"
    assert sbx.run_code("pwd", context=ctx).logs.stdout == [f"{tmp_path}\n"]
    sbx.remove_code_context(ctx)


async def test_async_sdk_contexts_and_run(async_sbx) -> None:
    ctx = await async_sbx.create_code_context()
    try:
        out = await async_sbx.run_code("21 * 2", context=ctx)
        assert out.text == "42"
        assert ctx.id in {c.id for c in await async_sbx.list_code_contexts()}
    finally:
        await async_sbx.remove_code_context(ctx)


async def test_restart_under_a_running_cell_ends_it(async_sbx) -> None:
    import asyncio

    ctx = await async_sbx.create_code_context()
    try:
        # The restart comes once the cell says it runs, not after a second: a restart that
        # reached the server first would leave the endless cell to a fresh kernel.
        inside = asyncio.Event()
        running = asyncio.create_task(
            async_sbx.run_code("print('in', flush=True)\nwhile True: pass", context=ctx,
                               timeout=0, on_stdout=lambda _: inside.set())
        )  # fmt: skip
        await asyncio.wait_for(inside.wait(), 60)
        await async_sbx.restart_code_context(ctx)
        ended = await asyncio.wait_for(running, timeout=60)
        assert ended.error is not None and ended.error.name == "ContextRestarting"
        assert (await async_sbx.run_code("'ok'", context=ctx)).text == "ok"
    finally:
        await async_sbx.remove_code_context(ctx)


def test_removed_default_context_is_made_again(sbx) -> None:
    sbx.run_code("marker = 1")
    # the default Python context was made first, at start (the list keeps creation order)
    default = next(c for c in sbx.list_code_contexts() if c.language == "python")
    sbx.remove_code_context(default)
    again = sbx.run_code("marker")
    assert again.error is not None and again.error.name == "NameError"
    assert sbx.run_code("3").text == "3"
