"""Issue 18's API and proxy gaps, driven by the official SDK through a real ``hutch serve``.

Each test is one behaviour that client code relies on and E2B's API or proxy has:
listing by ``started_after`` (gap 4), a sandbox killed under a running command (gap 5),
lifecycle on timeout (gap 6), E2B's newer endpoints (gap 11) and answer shapes (gap 13).
The MCP gateway (gap 14) has its own tests (``test_mcp.py``).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import httpx
import pytest
from e2b import AsyncSandbox, Sandbox, SandboxQuery, SandboxState
from e2b.exceptions import (
    AuthenticationException,
    InvalidArgumentException,
    SandboxException,
    SandboxNotRunningException,
)

from .serveproc import Serve

pytestmark = pytest.mark.root

BOOT_ID = "cat /proc/sys/kernel/random/boot_id"


def _listed(**query: object) -> set[str]:
    return {s.sandbox_id for s in Sandbox.list(query=SandboxQuery(**query)).next_items()}


def _wait_state(sandbox_id: str, state: SandboxState, within_s: float = 20) -> None:
    deadline = time.monotonic() + within_s
    while Sandbox.get_info(sandbox_id).state != state:
        assert time.monotonic() < deadline, f"{sandbox_id} not {state} after {within_s}s"
        time.sleep(0.05)


def test_list_started_after_includes_its_own_start_and_not_a_second_later(serve: Serve) -> None:
    sbx = Sandbox.create("busybox", timeout=120)
    try:
        started = sbx.get_info().started_at
        assert sbx.sandbox_id in _listed(started_after=started)
        assert sbx.sandbox_id not in _listed(started_after=started + timedelta(seconds=1))
    finally:
        sbx.kill()


END_OF_LIFE = "The sandbox was killed or reached its end of life"


def _after_it_runs(sbx: Sandbox, then: Callable[[], object]) -> threading.Thread:
    """Call ``then`` once ``sleep 60`` is running in ``sbx`` (seen from a second stream)."""

    def run() -> None:
        deadline = time.monotonic() + 30
        while not any("sleep" in " ".join([p.cmd, *p.args]) for p in sbx.commands.list()):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        then()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("how", ["kill", "timeout"])
def test_command_under_a_killed_sandbox_raises_not_running(serve: Serve, how: str) -> None:
    """The stream breaks; the SDK probes ``/health`` through the proxy, which answers 502
    "was not found" for the gone sandbox, so the SDK says it was killed (gap 5)."""
    sbx = Sandbox.create("busybox", timeout=120)
    end = sbx.kill if how == "kill" else (lambda: sbx.set_timeout(0))
    thread = _after_it_runs(sbx, end)
    with pytest.raises(SandboxNotRunningException, match=END_OF_LIFE):
        sbx.commands.run("sleep 60", timeout=90)
    thread.join(10)
    assert sbx.is_running() is False
    r = httpx.get(
        f"{serve.sandbox_url}/health",
        headers={"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "8080"},
    )
    assert r.status_code == 502
    assert r.json() == {"sandboxId": sbx.sandbox_id, "message": "The sandbox was not found",
                        "code": 502}  # fmt: skip


async def test_async_command_under_a_killed_sandbox_raises_not_running(serve: Serve) -> None:
    sbx = await AsyncSandbox.create("busybox", timeout=120)

    async def kill_once_running() -> None:
        while not any(p.cmd == "/bin/bash" or "sleep" in " ".join(p.args)
                      for p in await sbx.commands.list()):  # fmt: skip
            await asyncio.sleep(0.05)
        await sbx.kill()

    killer = asyncio.ensure_future(kill_once_running())
    with pytest.raises(SandboxNotRunningException, match=END_OF_LIFE):
        await sbx.commands.run("sleep 60", timeout=90)
    await asyncio.wait_for(killer, 60)
    assert await sbx.is_running() is False


def test_envd_control_routes_are_not_reachable_through_the_proxy(serve: Serve) -> None:
    sbx = Sandbox.create("busybox", timeout=120)
    try:
        headers = {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "49983"}
        r = httpx.post(f"{serve.sandbox_url}/init", headers=headers, json={"envVars": {"A": "1"}})
        assert r.status_code == 404 and r.json()["code"] == 404
        assert sbx.commands.run("echo ${A:-unset}").stdout == "unset\n"
    finally:
        sbx.kill()


def test_timeout_zero_auto_pauses_keeping_memory_and_connect_resumes_the_same_boot(
    serve: Serve,
) -> None:
    sbx = Sandbox.create(
        "busybox", timeout=120, lifecycle={"on_timeout": {"action": "pause", "keep_memory": None}}
    )
    try:
        boot_id = sbx.commands.run(BOOT_ID).stdout
        sbx.commands.run("echo kept > /tmp/note")
        sbx.set_timeout(0)
        _wait_state(sbx.sandbox_id, SandboxState.PAUSED)
        again = Sandbox.connect(sbx.sandbox_id)
        assert again.get_info().state == SandboxState.RUNNING
        assert again.commands.run(BOOT_ID).stdout == boot_id
        assert again.commands.run("cat /tmp/note").stdout == "kept\n"
    finally:
        sbx.kill()


def test_timeout_with_keep_memory_false_pauses_files_only_and_resume_reboots(
    serve: Serve,
) -> None:
    sbx = Sandbox.create(
        "busybox", timeout=120, lifecycle={"on_timeout": {"action": "pause", "keep_memory": False}}
    )
    try:
        boot_id = sbx.commands.run(BOOT_ID).stdout
        sbx.files.write("note.txt", "on disk")
        sbx.set_timeout(0)
        _wait_state(sbx.sandbox_id, SandboxState.PAUSED)
        again = Sandbox.connect(sbx.sandbox_id)
        assert again.commands.run(BOOT_ID).stdout != boot_id
        assert again.files.read("note.txt") == "on disk"
    finally:
        sbx.kill()


def test_filesystem_auto_pause_with_auto_resume_is_refused_by_the_sdk_or_the_api(
    serve: Serve,
) -> None:
    # The SDK refuses the combination itself; the API refuses it too (integration tests).
    with pytest.raises(InvalidArgumentException, match="filesystem"):
        Sandbox.create(
            "busybox",
            lifecycle={
                "on_timeout": {"action": "pause", "mode": "filesystem"},
                "auto_resume": True,
            },
        )


def test_mcp_on_a_template_without_the_gateway_fails_and_leaves_no_sandbox(
    serve: Serve,
) -> None:
    """The API takes ``mcp``; the SDK's ``mcp-gateway`` command then fails in a template that
    has none, and the SDK kills the sandbox and says why (the contract of docs/mcp.md)."""
    before = _listed()
    with pytest.raises(SandboxException, match=r"^Failed to start MCP gateway: .*mcp-gateway"):
        Sandbox.create("busybox", mcp={"memory": {}})
    assert _listed() == before


def _bearer(serve: Serve) -> httpx.Client:
    token = os.environ["E2B_API_KEY"]
    return httpx.Client(
        base_url=serve.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def test_api_keys_and_teams_issue_keys_the_sdk_uses(serve: Serve) -> None:
    """``POST /api-keys`` (dashboard) and ``GET /teams`` (``e2b auth login``) hand out
    keys the SDK then creates sandboxes with; a revoked key is refused (gap 11)."""
    with _bearer(serve) as c:
        created = c.post("/api-keys", json={"name": "e2e"}).json()
        [team] = c.get("/teams").json()
        assert team["isDefault"] is True
    for key in (created["key"], team["apiKey"]):
        sbx = Sandbox.create("busybox", api_key=key, timeout=60)
        assert Sandbox.kill(sbx.sandbox_id, api_key=key) is True
    with _bearer(serve) as c:
        assert c.delete(f"/api-keys/{created['id']}").status_code == 204
    with pytest.raises(AuthenticationException):
        Sandbox.create("busybox", api_key=created["key"])


def test_templates_and_build_logs_through_the_sdks_generated_client(serve: Serve) -> None:
    """``GET /templates/{id}``, ``GET /v2/templates`` and a real build's logs, parsed by
    the SDK's own models (every required field present, gap 11 and 13)."""
    from e2b import Template
    from e2b.api.client.api.templates import (
        get_templates_template_id,
        get_templates_template_id_builds_build_id_logs,
        get_v2_templates,
    )
    from e2b.api.client.models import LogsDirection, TemplateBuildLogsResponse, TemplateWithBuilds
    from e2b.api.client_sync import get_api_client
    from e2b.connection_config import ConnectionConfig

    client = get_api_client(ConnectionConfig())
    info = Template.build(Template().from_template("busybox").run_cmd("echo built-here"), "gaplogs")
    got = get_templates_template_id.sync_detailed("gaplogs", client=client).parsed
    assert isinstance(got, TemplateWithBuilds)
    assert str(got.builds[0].build_id) == info.build_id
    listed = get_v2_templates.sync_detailed(client=client).parsed
    assert isinstance(listed, list) and "gaplogs" in {t.template_id for t in listed}
    logs = get_templates_template_id_builds_build_id_logs.sync_detailed(
        "gaplogs", info.build_id, client=client
    ).parsed
    assert isinstance(logs, TemplateBuildLogsResponse)
    assert any("built-here" in e.message for e in logs.logs), [e.message for e in logs.logs]
    backward = get_templates_template_id_builds_build_id_logs.sync_detailed(
        "gaplogs", info.build_id, client=client, direction=LogsDirection.BACKWARD, limit=1
    ).parsed
    assert isinstance(backward, TemplateBuildLogsResponse)
    assert backward.logs == [logs.logs[-1]] or len(logs.logs) == 100
    # `e2b template publish`: PATCH /v2/templates/{id} {public}.
    from e2b.api.client.api.templates import patch_v_2_templates_template_id
    from e2b.api.client.models import TemplateUpdateRequest, TemplateUpdateResponse

    published = patch_v_2_templates_template_id.sync_detailed(
        "gaplogs", client=client, body=TemplateUpdateRequest(public=True)
    ).parsed
    assert isinstance(published, TemplateUpdateResponse) and published.names == ["gaplogs"]
    again = get_templates_template_id.sync_detailed("gaplogs", client=client).parsed
    assert isinstance(again, TemplateWithBuilds) and again.public is True


def test_sandbox_answers_carry_exactly_infras_fields(serve: Serve) -> None:
    """What the real serve answers for a sandbox: no ``domain: null`` (omitted, as
    infra), ``volumeMounts`` always a list; the SDK's own models parse them (gap 13)."""
    from e2b.api.client.models import ListedSandbox, SandboxDetail

    sbx = Sandbox.create("busybox", timeout=60, metadata={"shape": "yes"})
    try:
        headers = {"X-API-Key": os.environ["E2B_API_KEY"]}
        with httpx.Client(base_url=serve.api_url, headers=headers, timeout=30) as c:
            detail = c.get(f"/sandboxes/{sbx.sandbox_id}").json()
            [listed] = c.get("/v2/sandboxes", params={"metadata": "shape=yes"}).json()
            connected = c.post(f"/v2/sandboxes/{sbx.sandbox_id}/connect", json={}).json()
        assert "domain" not in detail and "domain" not in connected
        assert detail["volumeMounts"] == [] and listed["volumeMounts"] == []
        assert None not in detail.values() and None not in listed.values()
        SandboxDetail.from_dict(detail)
        ListedSandbox.from_dict(listed)
        assert sbx.get_info().metadata == {"shape": "yes"}
    finally:
        sbx.kill()


def test_list_sends_x_total_running(serve: Serve) -> None:
    """The running sandboxes that match, whatever the page size (gap 11)."""
    made = [Sandbox.create("busybox", timeout=60, metadata={"total": "t"}) for _ in range(2)]
    try:
        headers = {"X-API-Key": os.environ["E2B_API_KEY"]}
        with httpx.Client(base_url=serve.api_url, headers=headers, timeout=30) as c:
            r = c.get("/v2/sandboxes", params={"metadata": "total=t", "limit": 1})
            assert r.status_code == 200 and len(r.json()) == 1
            assert r.headers["x-total-running"] == "2"
            assert (
                "x-total-running" not in c.get("/v2/sandboxes", params={"state": "paused"}).headers
            )
        assert len(Sandbox.list(query=SandboxQuery(metadata={"total": "t"})).next_items()) == 2
    finally:
        for sbx in made:
            sbx.kill()
