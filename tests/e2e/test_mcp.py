"""The MCP gateway through a real ``hutch serve``, driven by the official ``e2b`` SDK
unchanged: ``Sandbox.create(mcp=...)`` picks the ``mcp-gateway`` template (install.sh
builds it) and runs ``mcp-gateway --config``; an MCP client (the ``mcp`` SDK) then reaches
``/mcp`` through hutch's proxy, by ``get_mcp_url()``'s host and by the ``E2b-Sandbox-*``
headers, with ``get_mcp_token()``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from e2b import AsyncSandbox, Sandbox, SandboxException, SandboxQuery
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import machine_lacks

from .serveproc import Serve

pytestmark = pytest.mark.root

TEMPLATE = "mcp-gateway"
CONFIG = {"filesystem": {"paths": ["/home/user"]}, "memory": {}}


def _require_template(serve: Serve) -> None:
    if not (serve.home / "templates" / TEMPLATE / "template.json").is_file():
        machine_lacks(f"the {TEMPLATE} template is not installed (./install.sh builds it)")


def _listed() -> set[str]:
    return {s.sandbox_id for s in Sandbox.list(query=SandboxQuery()).next_items()}


@pytest.fixture(scope="module")
def gateway(serve: Serve) -> Iterator[Sandbox]:
    _require_template(serve)
    sbx = Sandbox.create(mcp=CONFIG, timeout=300)  # no template: the SDK's mcp-gateway
    try:
        yield sbx
    finally:
        sbx.kill()


def _by_host(serve: Serve, sbx: Sandbox) -> tuple[str, dict[str, str]]:
    """``get_mcp_url()``'s host (``50005-<id>.<domain>``) sent to hutch's proxy."""
    url = urlsplit(sbx.get_mcp_url())
    assert url.netloc.startswith(f"50005-{sbx.sandbox_id}.") and url.path == "/mcp"
    return f"{serve.sandbox_url}/mcp", {"Host": url.netloc}


def _by_headers(serve: Serve, sbx: Sandbox) -> tuple[str, dict[str, str]]:
    """The ``E2B_SANDBOX_URL`` form: the proxy's URL and the sandbox's id and port."""
    return f"{serve.sandbox_url}/mcp", {
        "E2b-Sandbox-Id": sbx.sandbox_id,
        "E2b-Sandbox-Port": "50005",
    }


@contextlib.asynccontextmanager
async def _client(url: str, headers: dict[str, str], token: str) -> AsyncIterator[ClientSession]:
    async with (
        httpx.AsyncClient(headers={**headers, "Authorization": f"Bearer {token}"}) as http,
        streamable_http_client(url, http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def _use_both_servers(url: str, headers: dict[str, str], token: str) -> None:
    async with _client(url, headers, token) as mcp:
        names = {t.name for t in (await mcp.list_tools()).tools}
        assert {"filesystem__read_text_file", "filesystem__write_file"} <= names
        assert {"memory__create_entities", "memory__read_graph"} <= names
        assert all(n.startswith(("filesystem__", "memory__")) for n in names)

        wrote = await mcp.call_tool(
            "filesystem__write_file", {"path": "/home/user/mcp.txt", "content": "via mcp"}
        )
        assert not wrote.isError, wrote.content
        read = await mcp.call_tool("filesystem__read_text_file", {"path": "/home/user/mcp.txt"})
        assert read.content[0].text == "via mcp"  # type: ignore[union-attr]
        outside = await mcp.call_tool("filesystem__read_text_file", {"path": "/etc/passwd"})
        assert outside.isError  # only the configured paths

        entity = {"name": "hutch", "entityType": "project", "observations": ["runs MCP"]}
        made = await mcp.call_tool("memory__create_entities", {"entities": [entity]})
        assert not made.isError, made.content
        graph = await mcp.call_tool("memory__read_graph", {})
        assert "runs MCP" in graph.content[0].text  # type: ignore[union-attr]


def test_mcp_gateway_serves_both_servers_namespaced_by_url_and_by_headers(
    serve: Serve, gateway: Sandbox
) -> None:
    assert gateway.get_info().template_id == TEMPLATE
    token = gateway.get_mcp_token()
    assert token
    for route in (_by_host, _by_headers):
        url, headers = route(serve, gateway)
        asyncio.run(_use_both_servers(url, headers, token))
    # The filesystem server wrote into the sandbox itself.
    assert gateway.files.read("/home/user/mcp.txt") == "via mcp"


def test_mcp_needs_the_token_and_health_does_not(serve: Serve, gateway: Sandbox) -> None:
    url, headers = _by_headers(serve, gateway)
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
    for auth in ({}, {"Authorization": "Bearer not-the-token"}):
        r = httpx.post(url, headers={**headers, **auth}, json=initialize)
        assert r.status_code == 401, r.text
    health = httpx.get(url.removesuffix("/mcp") + "/health", headers=headers)
    assert health.status_code == 200 and health.json() == {"status": "ok"}


def test_connect_reads_back_the_same_token(gateway: Sandbox) -> None:
    again = Sandbox.connect(gateway.sandbox_id)
    assert again.get_mcp_token() == gateway.get_mcp_token()
    # The token file is root's alone.
    mode = gateway.commands.run("stat -c %a /etc/mcp-gateway/.token", user="root").stdout
    assert mode.strip() == "600"


@pytest.mark.parametrize(
    ("config", "says"),
    [
        ({"slack": {"botToken": "x"}}, "slack: not an MCP server this gateway knows"),
        ({"filesystem": {}}, "filesystem: paths must be"),
        ({"filesystem": {"paths": ["/nonexistent"]}}, "MCP server 'filesystem' failed"),
    ],
)
def test_a_bad_config_fails_the_create_and_leaves_no_sandbox(
    serve: Serve, config: dict, says: str
) -> None:
    _require_template(serve)
    before = _listed()
    with pytest.raises(SandboxException, match=r"^Failed to start MCP gateway: ") as caught:
        Sandbox.create(mcp=config)
    assert says in str(caught.value)
    assert _listed() == before


def test_mcp_gateway_with_the_async_sdk_and_a_pypi_server(serve: Serve) -> None:
    _require_template(serve)

    async def main() -> None:
        sbx = await AsyncSandbox.create(mcp={"memory": {}, "time": {}})  # npm and PyPI
        try:
            url, headers = _by_headers(serve, sbx)  # type: ignore[arg-type]
            async with _client(url, headers, await sbx.get_mcp_token() or "") as mcp:
                names = {t.name for t in (await mcp.list_tools()).tools}
                assert "memory__read_graph" in names and not any("filesystem" in n for n in names)
                assert "time__get_current_time" in names
                now = await mcp.call_tool("time__get_current_time", {"timezone": "UTC"})
                assert not now.isError and "UTC" in now.content[0].text  # type: ignore[union-attr]
        finally:
            await sbx.kill()

    asyncio.run(main())
