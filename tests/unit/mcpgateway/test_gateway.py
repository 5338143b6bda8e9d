"""The gateway's namespacing and forwarding, with in-process MCP servers on both sides.

Two FastMCP servers that both have a tool ``echo`` and a prompt ``greet`` sit behind one
:class:`Gateway`; an MCP client talks to the gateway over the SDK's in-memory transport.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio
import pytest
from mcp import ClientSession, types
from mcp.server.fastmcp import Context, FastMCP
from mcp.shared.exceptions import McpError
from mcp.shared.memory import create_connected_server_and_client_session

from hutch.mcpgateway.gateway import Gateway
from hutch.mcpgateway.upstream import Upstream


class Backend:
    def __init__(self, name: str) -> None:
        self.name = name
        self.cancelled = anyio.Event()
        self.started = anyio.Event()
        app = FastMCP(name)

        @app.tool()
        def echo(text: str) -> str:
            """Echo the text, saying who answered."""
            return f"{name}: {text}"

        @app.tool()
        async def count(n: int, ctx: Context) -> str:
            """Report progress n times."""
            for i in range(n):
                await ctx.report_progress(i + 1, n, f"step {i + 1}")
            return "counted"

        @app.tool()
        async def wait_forever() -> str:
            """Block until cancelled."""
            self.started.set()
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                self.cancelled.set()
                raise
            return "never"

        @app.prompt()
        def greet(who: str) -> str:
            return f"{name} greets {who}"

        @app.resource(f"memo://{name}/note")
        def note() -> str:
            return f"a note from {name}"

        self.app = app


@contextlib.asynccontextmanager
async def gateway_client(*backends: Backend) -> AsyncIterator[ClientSession]:
    async with contextlib.AsyncExitStack() as stack:
        upstreams = [
            Upstream(
                b.name,
                b.name,
                await stack.enter_async_context(create_connected_server_and_client_session(b.app)),
            )
            for b in backends
        ]
        gateway = Gateway(upstreams)
        yield await stack.enter_async_context(
            create_connected_server_and_client_session(gateway.server)
        )


async def test_same_named_tools_of_two_servers_are_namespaced_and_routed() -> None:
    async with gateway_client(Backend("alpha"), Backend("beta")) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert {"alpha__echo", "beta__echo", "alpha__count", "beta__wait_forever"} <= set(tools)
        assert tools["alpha__echo"].description == "Echo the text, saying who answered."
        assert tools["alpha__echo"].inputSchema["properties"]["text"]["type"] == "string"
        a = await client.call_tool("alpha__echo", {"text": "hi"})
        b = await client.call_tool("beta__echo", {"text": "hi"})
        assert [c.text for c in a.content] == ["alpha: hi"]  # type: ignore[union-attr]
        assert [c.text for c in b.content] == ["beta: hi"]  # type: ignore[union-attr]


async def test_an_unknown_or_unprefixed_tool_is_an_error_naming_the_servers() -> None:
    async with gateway_client(Backend("alpha")) as client:
        for name in ("echo", "gamma__echo", "alpha__"):
            with pytest.raises(McpError, match=r"unknown tool .*servers: alpha"):
                await client.call_tool(name, {"text": "x"})
        # A backend's own error comes back as the backend gave it.
        result = await client.call_tool("alpha__nope", {})
        assert result.isError


async def test_prompts_are_namespaced_and_resources_routed_by_uri() -> None:
    async with gateway_client(Backend("alpha"), Backend("beta")) as client:
        prompts = {p.name for p in (await client.list_prompts()).prompts}
        assert prompts == {"alpha__greet", "beta__greet"}
        got = await client.get_prompt("beta__greet", {"who": "you"})
        assert got.messages[0].content.text == "beta greets you"  # type: ignore[union-attr]
        uris = {str(r.uri) for r in (await client.list_resources()).resources}
        assert uris == {"memo://alpha/note", "memo://beta/note"}
        read = await client.read_resource(types.AnyUrl("memo://beta/note"))
        assert read.contents[0].text == "a note from beta"  # type: ignore[union-attr]


async def test_progress_is_forwarded_to_the_callers_token() -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with gateway_client(Backend("alpha")) as client:
        result = await client.call_tool("alpha__count", {"n": 3}, progress_callback=on_progress)
        assert [c.text for c in result.content] == ["counted"]  # type: ignore[union-attr]
    assert seen == [(1, 3, "step 1"), (2, 3, "step 2"), (3, 3, "step 3")]


async def test_a_callers_cancellation_reaches_the_backend() -> None:
    backend = Backend("alpha")
    async with gateway_client(backend) as client:
        request_id = client._request_id  # the id the call below gets
        async with anyio.create_task_group() as tg:

            async def call() -> None:
                with contextlib.suppress(McpError):
                    await client.call_tool("alpha__wait_forever", {})

            tg.start_soon(call)
            with anyio.fail_after(10):
                await backend.started.wait()
            await client.send_notification(
                types.ClientNotification(
                    types.CancelledNotification(
                        params=types.CancelledNotificationParams(requestId=request_id)
                    )
                )
            )
            with anyio.fail_after(10):
                await backend.cancelled.wait()
            tg.cancel_scope.cancel()
        # The gateway still serves afterwards.
        echoed = await client.call_tool("alpha__echo", {"text": "after"})
        assert [c.text for c in echoed.content] == ["alpha: after"]  # type: ignore[union-attr]
