"""Timeouts, disconnects and dying kernels: the cell stops, the context keeps serving."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.integration.interpreter.conftest import Server


def test_timeout_interrupts_the_cell_and_keeps_state(sbx) -> None:
    from e2b import TimeoutException

    ctx = sbx.create_code_context()
    try:
        sbx.run_code("kept = 'still here'", context=ctx)
        with pytest.raises(TimeoutException, match="Execution timed out"):
            sbx.run_code("while True: pass", context=ctx, timeout=1)
        out = sbx.run_code("kept", context=ctx)  # waits for the interrupt to land
        assert out.error is None and out.text == "still here"
    finally:
        sbx.remove_code_context(ctx)


def test_disconnect_interrupts_the_cell(server: Server) -> None:
    with httpx.Client(timeout=30) as client:
        ctx = client.post(server.url + "/contexts", json={}).json()
        client.post(server.url + "/execute", json={"code": "i = -1", "context_id": ctx["id"]})
        body = {
            "code": "import time\nfor i in range(600): time.sleep(0.1)\n'finished'",
            "context_id": ctx["id"],
        }
        with client.stream("POST", server.url + "/execute", json=body) as resp:
            for line in resp.iter_lines():
                if "number_of_executions" in line:
                    break  # the cell runs: leave in the middle of it
        out = client.post(server.url + "/execute", json={"code": "i", "context_id": ctx["id"]})
        # the loop stopped where the interrupt found it, long before its end
        assert '"text": "' in out.text, (out.text, server.log()[-3000:])
        last = int(out.text.split('"text": "')[1].split('"')[0])
        assert last < 599
        client.delete(server.url + f"/contexts/{ctx['id']}")


async def test_cancelled_async_run_interrupts(async_sbx) -> None:
    ctx = await async_sbx.create_code_context()
    try:
        task = asyncio.create_task(async_sbx.run_code("import time; time.sleep(600)", context=ctx))
        await asyncio.sleep(1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        out = await async_sbx.run_code("'alive'", context=ctx)
        assert out.text == "alive"
    finally:
        await async_sbx.remove_code_context(ctx)


def test_kernel_that_dies_is_reported_and_restarted(sbx) -> None:
    ctx = sbx.create_code_context()
    try:
        sbx.run_code("lost = 1", context=ctx)
        died = sbx.run_code("import os; os._exit(1)", context=ctx)
        assert died.error is not None
        assert died.error.name == "KernelDied"
        assert "exited with code 1" in died.error.value
        after = sbx.run_code("'fresh'", context=ctx)
        assert after.error is None and after.text == "fresh"
        gone = sbx.run_code("lost", context=ctx)
        assert gone.error is not None and gone.error.name == "NameError"
        # the sandbox's env vars are given to the new kernel too
        assert (
            sbx.run_code("import os; os.environ['SANDBOX_ONLY']", context=ctx).text
            == "from-sandbox"
        )
    finally:
        sbx.remove_code_context(ctx)


def test_a_swallowed_interrupt_is_sent_again(server: Server) -> None:
    # The first KeyboardInterrupt is caught by the cell (as one landing between cells is
    # by ipykernel); the server interrupts again, so the kernel need not be restarted.
    with httpx.Client(timeout=60) as client:
        ctx = client.post(server.url + "/contexts", json={}).json()
        client.post(server.url + "/execute", json={"code": "kept = 'yes'", "context_id": ctx["id"]})
        body = {
            "code": "import time\ntry:\n    print('in', flush=True)\n    time.sleep(600)\n"
            "except KeyboardInterrupt:\n    swallowed = True\n    time.sleep(600)",
            "context_id": ctx["id"],
        }
        with client.stream("POST", server.url + "/execute", json=body) as resp:
            for line in resp.iter_lines():
                if '"stdout"' in line:
                    break  # inside the try: the first interrupt is the cell's to swallow
        out = client.post(
            server.url + "/execute", json={"code": "(kept, swallowed)", "context_id": ctx["id"]}
        )
        assert '"text": "(\'yes\', True)"' in out.text, (out.text, server.log()[-2000:])
        client.delete(server.url + f"/contexts/{ctx['id']}")
