"""The same manager on gVisor (runsc): create, reach envd, kill, nothing left."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import httpx
import pytest
from nodehelpers import count_leaks, node_settings

from hutch.node.app import build_node
from hutch.node.sandbox import SandboxRequest
from tests.conftest import machine_lacks


async def test_manager_on_runsc_creates_and_kills(
    node_home: Path, envd_bundle_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("runsc") is None:
        machine_lacks("runsc is not installed (install.sh installs it)")
    for var in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    settings = node_settings(node_home, envd_bundle_dir, runtime="runsc")
    node = build_node(settings, build_bundle=False)
    await node.manager.start()
    try:
        sid = f"hsm-{uuid.uuid4().hex[:12]}"
        sbx = await node.manager.create(
            SandboxRequest(sandbox_id=sid, template="busybox", env_vars={"A": "1"})
        )
        async with httpx.AsyncClient(trust_env=False) as http:
            assert (await http.get(sbx.envd_url + "/envs")).json() == {"A": "1"}
        assert await node.manager.kill(sid)
    finally:
        await node.manager.reconcile([])
        leaks = await count_leaks(settings, node.manager._runtime)
        await node.networks.remove_bridge()
        await node.aclose()
    assert leaks.total() == 0, leaks
