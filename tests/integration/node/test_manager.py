"""SandboxManager on real runc: create, use through envd, kill, roll back, limits."""

from __future__ import annotations

import uuid

import httpx
import pytest
from nodehelpers import cgroup_parents, count_leaks

from hutch.node.app import Node
from hutch.node.sandbox import SandboxRequest
from hutch.node.settings import NodeSettings
from hutch.node.templates.artifact import TemplateNotFoundError
from hutch.shared.errors import AlreadyExistsError, HutchError, ResourceExhaustedError


def new_id() -> str:
    return f"hsm-{uuid.uuid4().hex[:12]}"


async def run_in_sandbox(envd_url: str, monkeypatch: pytest.MonkeyPatch, cmd: str) -> str:
    """Run ``cmd`` through envd's Connect process service with the official SDK."""
    from e2b import AsyncSandbox

    monkeypatch.setenv("E2B_DEBUG", "true")
    monkeypatch.setenv("E2B_SANDBOX_URL", envd_url)
    monkeypatch.setenv("E2B_API_KEY", "e2b_" + "0" * 40)
    sbx = await AsyncSandbox.create()
    result = await sbx.commands.run(cmd)
    assert result.exit_code == 0, result
    return result.stdout


async def test_manager_create_runs_envd_in_the_sandbox(
    node: Node, settings: NodeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = new_id()
    sbx = await node.manager.create(
        SandboxRequest(
            sandbox_id=sid,
            template="busybox",
            env_vars={"GREETING": "hi"},
            cpu_count=0.5,
            memory_mb=96,
        )
    )
    assert sbx.address in node.networks.settings.subnet
    assert sbx.pid > 0
    async with httpx.AsyncClient(trust_env=False) as http:
        assert (await http.get(sbx.envd_url + "/health")).status_code == 204
        assert (await http.get(sbx.envd_url + "/envs")).json() == {"GREETING": "hi"}
    assert await run_in_sandbox(sbx.envd_url, monkeypatch, "echo hello") == "hello\n"
    out = await run_in_sandbox(
        sbx.envd_url, monkeypatch, 'echo "$(hostname) $(whoami) $(pwd) $GREETING"'
    )
    assert out == f"{sid} user /home/user hi\n"
    resolv = await run_in_sandbox(sbx.envd_url, monkeypatch, "cat /etc/resolv.conf")
    assert "nameserver 1.1.1.1" in resolv
    memory = [p / sid for p in cgroup_parents() if p.parts[4] == "memory"]
    assert int((memory[0] / "memory.limit_in_bytes").read_text()) == 96 * 1024 * 1024
    assert [s.sandbox_id for s in node.manager.list()] == [sid]
    assert node.manager.get(sid) == sbx

    assert await node.manager.kill(sid) is True
    assert node.manager.list() == []
    assert (await count_leaks(settings, node.manager._runtime)).total() == 0
    # Idempotent: a second kill finds nothing and does not fail.
    assert await node.manager.kill(sid) is False


async def test_manager_access_token_is_required_after_init(node: Node) -> None:
    sbx = await node.manager.create(
        SandboxRequest(sandbox_id=new_id(), template="busybox", access_token="s3cret")
    )
    async with httpx.AsyncClient(trust_env=False) as http:
        assert (await http.get(sbx.envd_url + "/envs")).status_code == 401
        ok = await http.get(sbx.envd_url + "/envs", headers={"X-Access-Token": "s3cret"})
        assert ok.status_code == 200
    await node.manager.kill(sbx.sandbox_id)


async def test_manager_create_rolls_back_when_envd_fails(
    node: Node, settings: NodeSettings
) -> None:
    # The template names a user its /etc/passwd lacks: envd refuses to start or to /init.
    with pytest.raises(HutchError):
        await node.manager.create(SandboxRequest(sandbox_id=new_id(), template="badinit"))
    assert node.manager.list() == []
    assert (await count_leaks(settings, node.manager._runtime)).total() == 0


async def test_manager_refuses_unknown_template_duplicate_id_and_over_limit(
    node: Node, settings: NodeSettings
) -> None:
    with pytest.raises(TemplateNotFoundError):
        await node.manager.create(SandboxRequest(sandbox_id=new_id(), template="nope"))
    sid = new_id()
    await node.manager.create(SandboxRequest(sandbox_id=sid, template="busybox"))
    with pytest.raises(AlreadyExistsError):
        await node.manager.create(SandboxRequest(sandbox_id=sid, template="busybox"))
    object.__setattr__(node.manager.config, "max_sandboxes", 1)
    with pytest.raises(ResourceExhaustedError):
        await node.manager.create(SandboxRequest(sandbox_id=new_id(), template="busybox"))
    await node.manager.kill(sid)
    assert (await count_leaks(settings, node.manager._runtime)).total() == 0
