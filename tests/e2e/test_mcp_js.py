"""The MCP gateway with the official JS SDK (``e2b`` 2.51.0) and the MCP TypeScript SDK's
client (``@modelcontextprotocol/sdk`` 1.32.2, both pinned in ``js/mcp``), unchanged,
through node against the session's real ``hutch serve``: ``js/mcp.test.cjs`` under ``node
--test`` (test.sh installs the packages with ``npm ci`` into the test cache;
``tests/compat/clients.py``)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.compat import clients
from tests.conftest import machine_lacks

from .serveproc import Serve

pytestmark = pytest.mark.root

JS = Path(__file__).parent / "js"


def test_mcp_gateway_js_sdk(serve: Serve, tmp_path: Path) -> None:
    if not (serve.home / "templates" / "mcp-gateway" / "template.json").is_file():
        machine_lacks("the mcp-gateway template is not installed (./install.sh)")
    node = shutil.which("node")
    have = clients.node_version()
    if node is None or have is None or have < clients.NODE_MIN:
        machine_lacks(f"node >= {clients.NODE_MIN} is needed (test.sh installs it); have {have}")
    modules = clients.node_modules_at(JS / "mcp", name="e2e-mcp", label="mcp")
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(NODE_PATH=str(modules), HOME=str(tmp_path))  # no ~/.e2b config
    run = subprocess.run(
        [node, "--test", "--test-reporter=spec", str(JS / "mcp.test.cjs")],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert "pass 2\n" in run.stdout and "fail 0\n" in run.stdout, run.stdout[-3000:]
