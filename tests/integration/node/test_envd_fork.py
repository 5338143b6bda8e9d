"""envd forked into runc sandboxes by the node's zygote (``HUTCH_NODE_ENVD_ZYGOTE``, ADR 0032
addendum step 2): the node's own flow on real runc, envd checked against PID 1, its death
watched, pause/resume, a node restart, a zygote restart, and nothing left behind."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from pathlib import Path

import httpx
import pytest
from nodehelpers import count_leaks, node_settings

from hutch.node import zygote
from hutch.node.app import Node, build_node
from hutch.node.runtime.base import RuntimeStatus
from hutch.node.sandbox import SandboxRequest
from hutch.node.sandbox.envd_fork import WAITER_ARGV
from hutch.node.settings import NodeSettings


@pytest.fixture
def settings(node_home: Path, envd_bundle_dir: Path) -> NodeSettings:
    return node_settings(node_home, envd_bundle_dir, envd_zygote=True)


def new_id() -> str:
    return f"hsz-{uuid.uuid4().hex[:12]}"


async def _eventually(check, timeout_s: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.05)
    return False


async def _healthy(url: str) -> bool:
    async with httpx.AsyncClient(trust_env=False) as http:
        return (await http.get(url + "/health")).status_code == 204


def _kill(pid: int) -> None:
    """SIGKILL one process; never pid 0 (an exec'd envd's ``envd_pid``), which would kill
    this test's whole process group."""
    assert pid > 0, f"no forked envd or zygote to kill (pid {pid})"
    os.kill(pid, signal.SIGKILL)


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


async def test_forked_envd_is_the_sandboxs_own_and_serves(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_manager import run_in_sandbox

    assert node.manager.zygote is not None and node.manager.zygote.ready
    sid = new_id()
    sbx = await node.manager.create(
        SandboxRequest(sandbox_id=sid, template="busybox", env_vars={"GREETING": "hi"})
    )
    assert sbx.envd_pid > 0 and sbx.envd_pid != sbx.pid
    assert _cmdline(sbx.pid)[2:] == list(WAITER_ARGV)  # tini -- <waiter>
    # Everything the node checked before using it, and the pid in sandbox.json.
    assert zygote.differences(sbx.envd_pid, sbx.pid) == []
    assert json.loads((sbx.sandbox_dir / "sandbox.json").read_text())["envd_pid"] == sbx.envd_pid
    status = zygote.parse_status(Path(f"/proc/{sbx.envd_pid}/status").read_text())
    assert status["Seccomp"] == "2" and status["NoNewPrivs"] == "0"
    assert status["CapEff"] != "000001ffffffffff"  # Docker's set, not the host's
    # No host descriptor but envd.log (the log it was given) and the sandbox's /dev/null.
    for fd in os.listdir(f"/proc/{sbx.envd_pid}/fd"):
        target = os.readlink(f"/proc/{sbx.envd_pid}/fd/{fd}")
        if not target.startswith(("socket:", "pipe:", "anon_inode:")):
            assert target in (str(sbx.sandbox_dir / "envd.log"), "/dev/null"), (fd, target)
    # It serves through the SDK as an exec'd one does, in the sandbox's own view.
    out = await run_in_sandbox(
        sbx.envd_url,
        monkeypatch,
        'echo "$(hostname) $(whoami) $GREETING"; cat /proc/1/cmdline',
    )
    assert out.startswith(f"{sid} user hi\n")
    assert "/.hutch/tini" in out
    assert (sbx.sandbox_dir / "envd.log").stat().st_size > 0  # envd's own lines
    assert await node.manager.kill(sid)
    assert await _eventually(lambda: _gone(sbx.envd_pid))  # it dies with its container


async def _gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


async def test_forked_envd_death_stops_its_sandbox(node: Node) -> None:
    sbx = await node.manager.create(SandboxRequest(sandbox_id=new_id(), template="busybox"))
    _kill(sbx.envd_pid)

    async def stopped() -> bool:
        return (await node.manager._runtime.state(sbx.host_id)).status is RuntimeStatus.STOPPED

    assert await _eventually(stopped)  # as when an exec'd envd (tini's child) dies
    assert await node.manager.kill(sbx.sandbox_id)


async def test_forked_envd_survives_pause_and_is_forked_again_on_reboot(node: Node) -> None:
    sbx = await node.manager.create(SandboxRequest(sandbox_id=new_id(), template="busybox"))
    await node.manager.pause(sbx.sandbox_id)  # frozen with its memory
    resumed, kept = await node.manager.resume(sbx.sandbox_id)
    assert kept and resumed.envd_pid == sbx.envd_pid and await _healthy(resumed.envd_url)
    await node.manager.pause(sbx.sandbox_id, keep_memory=False)  # container deleted
    assert node.manager.get(sbx.sandbox_id).envd_pid == 0
    rebooted, kept = await node.manager.resume(sbx.sandbox_id)
    assert not kept and rebooted.envd_pid not in (0, sbx.envd_pid)
    assert zygote.differences(rebooted.envd_pid, rebooted.pid) == []
    assert await _healthy(rebooted.envd_url)
    assert await node.manager.kill(sbx.sandbox_id)


async def test_node_restart_watches_forked_envds_again(node: Node, settings: NodeSettings) -> None:
    sbx = await node.manager.create(SandboxRequest(sandbox_id=new_id(), template="busybox"))
    zygote_pid = node.manager.zygote.pid if node.manager.zygote else None
    await node.manager.aclose()  # node stop: the zygote goes, the sandbox and its envd stay
    assert zygote_pid and await _eventually(lambda: _gone(zygote_pid))
    assert await _healthy(sbx.envd_url)
    restarted = build_node(settings, build_bundle=False)
    try:
        await restarted.manager.start()
        report = await restarted.manager.reconcile([sbx.sandbox_id])
        assert list(report.adopted) == [sbx.sandbox_id]
        assert restarted.manager.get(sbx.sandbox_id).envd_pid == sbx.envd_pid
        _kill(sbx.envd_pid)  # the re-armed watch stops the container

        async def stopped() -> bool:
            state = await restarted.manager._runtime.state(sbx.host_id)
            return state.status is RuntimeStatus.STOPPED

        assert await _eventually(stopped)
        await restarted.manager.reconcile([])
    finally:
        await restarted.aclose()
    assert (await count_leaks(settings, restarted.manager._runtime)).total() == 0


async def test_zygote_is_restarted_and_creates_exec_meanwhile(node: Node) -> None:
    zyg = node.manager.zygote
    assert zyg is not None and zyg.pid is not None
    first = zyg.pid
    zyg._restart_s = 5.0  # long enough for one create to see it down
    _kill(first)
    assert await _eventually(lambda: _not_ready(zyg), timeout_s=10)
    # While it is down, a create takes the exec path: envd is tini's child again.
    during = await node.manager.create(SandboxRequest(sandbox_id=new_id(), template="busybox"))
    assert during.envd_pid == 0 and "hutch.envd" in _cmdline(during.pid)
    assert await _healthy(during.envd_url)
    await zyg.wait_ready(60)
    assert zyg.pid not in (None, first) and zyg.starts >= 2
    after = await node.manager.create(SandboxRequest(sandbox_id=new_id(), template="busybox"))
    assert after.envd_pid > 0 and zygote.differences(after.envd_pid, after.pid) == []
    for sbx in (during, after):
        assert await node.manager.kill(sbx.sandbox_id)


async def _not_ready(zyg) -> bool:  # type: ignore[no-untyped-def]
    return not zyg.ready


async def test_zygote_off_execs_envd(node_home: Path, envd_bundle_dir: Path) -> None:
    settings = node_settings(node_home, envd_bundle_dir, envd_zygote=False)
    built = build_node(settings, build_bundle=False)
    await built.manager.start()
    try:
        assert built.manager.zygote is None
        sbx = await built.manager.create(SandboxRequest(sandbox_id=new_id(), template="busybox"))
        assert sbx.envd_pid == 0 and "hutch.envd" in _cmdline(sbx.pid)
        await built.manager.reconcile([])
    finally:
        await built.networks.remove_bridge()
        await built.aclose()
    assert (await count_leaks(settings, built.manager._runtime)).total() == 0
