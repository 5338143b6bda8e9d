"""Issue 18's API and proxy gaps, driven by the official SDK through a real ``hutch serve``.

Each test is one behaviour that client code relies on and E2B's API or proxy has:
listing by ``started_after`` (gap 4), a sandbox killed under a running command (gap 5),
lifecycle on timeout (gap 6), E2B's newer endpoints (gap 11), answer shapes (gap 13) and
the ``mcp`` refusal (gap 14).
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from e2b import Sandbox, SandboxQuery, SandboxState
from e2b.exceptions import InvalidArgumentException, SandboxException

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


def test_mcp_at_create_is_a_clear_400(serve: Serve) -> None:
    before = _listed()
    with pytest.raises(SandboxException) as caught:
        Sandbox.create("busybox", mcp={"github": {"githubPersonalAccessToken": "x"}})
    assert str(caught.value).startswith("400: mcp:")
    assert "MCP gateway" in str(caught.value)
    assert _listed() == before
