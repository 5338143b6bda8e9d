"""``mcp-gateway --config`` as the SDK runs it, on this host: real processes, real HTTP.

The servers are ``github/local/...`` entries whose checkout exists already (no clone), each
running a small FastMCP stdio server under this Python; the gateway's dirs and port are
the test's own (``HUTCH_MCP_GATEWAY_*``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

SERVER = """
import sys
from mcp.server.fastmcp import FastMCP
app = FastMCP("echo")

@app.tool()
def echo(text: str) -> str:
    return "echo: " + text

print("echo server up", file=sys.stderr)
app.run()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Gateway:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = _free_port()
        self.token = "t0ken-" + os.urandom(4).hex()
        self.env = {
            **os.environ,
            "HUTCH_MCP_GATEWAY_HOST": "127.0.0.1",
            "HUTCH_MCP_GATEWAY_PORT": str(self.port),
            "HUTCH_MCP_GATEWAY_STATE_DIR": str(root / "state"),
            "HUTCH_MCP_GATEWAY_LOG_DIR": str(root / "log"),
            "HUTCH_MCP_GATEWAY_SERVERS_DIR": str(root / "servers"),
            "HUTCH_MCP_GATEWAY_START_TIMEOUT_S": "30",
            "GATEWAY_ACCESS_TOKEN": self.token,
        }
        (root / "echo.py").write_text(SERVER)

    def entry(self, repo: str, run: str, **more: object) -> dict[str, object]:
        (self.root / "servers" / "github" / "local" / repo / ".git").mkdir(parents=True)
        return {f"github/local/{repo}": {"runCmd": run, **more}}

    def launch(self, config: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hutch.mcpgateway", "--config", json.dumps(config)],
            env=self.env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    def stop(self) -> None:
        pid_file = self.root / "state" / "gateway.pid"
        if pid_file.is_file():
            pid = int(pid_file.read_text())
            os.killpg(pid, signal.SIGTERM)
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return
                anyio.run(anyio.sleep, 0.05)
            os.killpg(pid, signal.SIGKILL)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    g = Gateway(tmp_path)
    try:
        yield g
    finally:
        g.stop()


async def _echo(url: str, token: str) -> str:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx.AsyncClient(headers=headers) as http,
        streamable_http_client(url, http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        names = [t.name for t in (await session.list_tools()).tools]
        assert names == ["github_local_echo__echo"]
        result = await session.call_tool("github_local_echo__echo", {"text": "hi"})
        return result.content[0].text  # type: ignore[union-attr]


def test_config_starts_the_gateway_then_exits_0_and_mcp_needs_the_token(
    gateway: Gateway,
) -> None:
    run = f"test -f installed && {sys.executable} {gateway.root / 'echo.py'}"
    done = gateway.launch(gateway.entry("echo", run, installCmd="touch installed"))
    assert done.returncode == 0, done.stderr  # installCmd ran in the checkout, then runCmd
    assert "ready" in done.stdout
    token_file = gateway.root / "state" / ".token"
    assert token_file.read_text() == gateway.token
    assert token_file.stat().st_mode & 0o777 == 0o600
    base = f"http://127.0.0.1:{gateway.port}"
    assert httpx.get(f"{base}/health").status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": gateway.token}):
        r = httpx.post(f"{base}/mcp", headers=headers, json={})
        assert r.status_code == 401, headers
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert anyio.run(_echo, f"{base}/mcp", gateway.token) == "echo: hi"
    # A second start is refused and the running gateway keeps its token.
    again = gateway.launch({"memory": {}})
    assert again.returncode == 1 and "already serves" in again.stderr
    assert token_file.read_text() == gateway.token


def test_a_server_that_exits_fails_the_command_with_its_stderr(gateway: Gateway) -> None:
    config = gateway.entry("broken", "echo 'cannot find my config' >&2; exit 3")
    done = gateway.launch(config)
    assert done.returncode == 1
    assert "MCP server 'github/local/broken' failed to start" in done.stderr
    assert "cannot find my config" in done.stderr
    with pytest.raises(httpx.ConnectError):  # nothing left listening
        httpx.get(f"http://127.0.0.1:{gateway.port}/health")


def test_an_unknown_server_fails_before_anything_starts(gateway: Gateway) -> None:
    done = gateway.launch({"memory": {}, "nosuch": {}})
    assert done.returncode == 1
    assert done.stderr.startswith("nosuch: not an MCP server this gateway knows")
    assert not (gateway.root / "state").exists()


def test_a_catalog_server_not_installed_says_how_to_add_it(gateway: Gateway) -> None:
    done = gateway.launch({"time": {}})
    assert done.returncode == 1
    assert "MCP server 'time' failed to start" in done.stderr
    assert "add_mcp_server('time')" in done.stderr


def _pull(gateway: Gateway, *names: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hutch.mcpgateway", "pull", *names],
        env=gateway.env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_pull_of_an_installed_server_needs_nothing_and_an_unknown_one_fails(
    gateway: Gateway,
) -> None:
    """The SDK's ``Template.add_mcp_server`` runs ``mcp-gateway pull``: the template's own
    servers are there already (no network); an unknown name fails the build step."""
    bin_dir = gateway.root / "servers" / "npm" / "node_modules" / ".bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "mcp-server-memory").write_text("#!/bin/sh\n")
    done = _pull(gateway, "memory")
    assert done.returncode == 0, done.stderr
    assert "memory (@modelcontextprotocol/server-memory@" in done.stdout
    bad = _pull(gateway, "memory", "slack")
    assert bad.returncode == 2 and "unknown MCP server slack" in bad.stderr
