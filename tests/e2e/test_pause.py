"""Pause and resume through a real ``hutch serve`` (runc), driven by the official SDK (ADR 0004).

What a resume keeps is checked from inside the sandbox: files, a background process still
counting, metadata, and ``/proc/sys/kernel/random/boot_id`` (the same after a resume that
kept memory, new after one that booted the sandbox again from its files).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from e2b import Sandbox, SandboxQuery, SandboxState

from .serveproc import Serve

pytestmark = pytest.mark.root

BOOT_ID = "cat /proc/sys/kernel/random/boot_id"
# Each value is renamed into place: a freeze between a truncate and a write would leave
# /tmp/counter empty for the host-side reads below.
COUNTER = (
    "i=0; while true; do i=$((i+1)); echo $i > /tmp/counter.new; mv /tmp/counter.new /tmp/counter;"
    " sleep 0.05; done"
)


def _api(serve: Serve) -> httpx.Client:
    return httpx.Client(
        base_url=serve.api_url, headers={"X-API-Key": os.environ["E2B_API_KEY"]}, timeout=60
    )


def counter_of(sbx: Sandbox) -> int:
    """The counter's last value, 0 before its first write."""
    return int(sbx.commands.run("cat /tmp/counter 2>/dev/null || true").stdout.strip() or 0)


def counts_past(sbx: Sandbox, value: int, within_s: float = 30) -> int:
    """Wait until the counter in ``sbx`` is above ``value`` (a loaded machine may run its
    loop rarely: a fixed sleep and one read is a guess) and return what it read."""
    deadline = time.monotonic() + within_s
    while (now := counter_of(sbx)) <= value:
        assert time.monotonic() < deadline, f"the counter stayed at {now} for {within_s}s"
        time.sleep(0.05)
    return now


def _wait_state(sbx_id: str, state: SandboxState, within_s: float = 20) -> None:
    deadline = time.monotonic() + within_s
    while Sandbox.get_info(sbx_id).state != state:
        assert time.monotonic() < deadline, f"{sbx_id} not {state} after {within_s}s"
        time.sleep(0.2)


@pytest.mark.compat("pause", "connect")
def test_pause_and_connect_keep_memory_processes_files_metadata(serve: Serve) -> None:
    sbx = Sandbox.create("busybox", metadata={"who": "me"}, timeout=120)
    try:
        boot_id = sbx.commands.run(BOOT_ID).stdout
        assert boot_id != Path("/proc/sys/kernel/random/boot_id").read_text()
        sbx.files.write("/tmp/note.txt", "kept")
        counter = sbx.commands.run(COUNTER, background=True, timeout=0)
        with _api(serve) as c:
            assert c.patch(f"/sandboxes/{sbx.sandbox_id}/metadata", json={"k": "v"}).is_success
        counts_past(sbx, 0)  # it has written /tmp/counter
        assert sbx.pause() is True
        assert sbx.pause() is False
        paused = Sandbox.list(query=SandboxQuery(state=[SandboxState.PAUSED])).next_items()
        assert sbx.sandbox_id in {s.sandbox_id for s in paused}
        with _api(serve) as c:
            assert c.get(f"/sandboxes/{sbx.sandbox_id}").json()["pauseMode"] == "full"
        frozen = int((serve.home / "sandboxes" / sbx.sandbox_id / "layer/upper/tmp/counter")
                     .read_text())  # fmt: skip
        time.sleep(0.5)
        assert int((serve.home / "sandboxes" / sbx.sandbox_id / "layer/upper/tmp/counter")
                   .read_text()) == frozen  # fmt: skip

        again = Sandbox.connect(sbx.sandbox_id)
        assert again.get_info().state == SandboxState.RUNNING
        assert again.commands.run(BOOT_ID).stdout == boot_id
        assert again.files.read("/tmp/note.txt") == "kept"
        assert again.get_info().metadata == {"who": "me", "k": "v"}
        pids = [p.pid for p in again.commands.list()]
        assert counter.pid in pids
        counts_past(again, counter_of(again))  # the same process counts on
    finally:
        sbx.kill()


def test_filesystem_pause_reboots_with_a_new_boot_id(serve: Serve) -> None:
    sbx = Sandbox.create("busybox", timeout=120)
    try:
        boot_id = sbx.commands.run(BOOT_ID).stdout
        sbx.files.write("note.txt", "on disk")
        counter = sbx.commands.run(COUNTER, background=True, timeout=0)
        assert sbx.pause(mode="filesystem") is True
        with _api(serve) as c:
            assert c.get(f"/sandboxes/{sbx.sandbox_id}").json()["pauseMode"] == "filesystem"
            r = c.post(f"/v2/sandboxes/{sbx.sandbox_id}/connect", json={})
            assert r.status_code == 201 and r.headers["hutch-resume"] == "filesystem"
        assert sbx.commands.run(BOOT_ID).stdout != boot_id
        assert sbx.files.read("note.txt") == "on disk"
        assert counter.pid not in [p.pid for p in sbx.commands.list()]
        # And a memory-keeping pause after that keeps the new boot id.
        second = sbx.commands.run(BOOT_ID).stdout
        sbx.pause()
        assert Sandbox.connect(sbx.sandbox_id).commands.run(BOOT_ID).stdout == second
    finally:
        sbx.kill()


def test_reboot_on_resume_when_asked(serve: Serve) -> None:
    sbx = Sandbox.create("busybox", timeout=120)
    try:
        boot_id = sbx.commands.run(BOOT_ID).stdout
        sbx.pause()
        again = Sandbox.connect(sbx.sandbox_id, on_resume="reboot")
        assert again.commands.run(BOOT_ID).stdout != boot_id
    finally:
        sbx.kill()


def test_auto_pause_on_timeout_and_auto_resume_by_traffic(serve: Serve) -> None:
    sbx = Sandbox.create("busybox", timeout=2, lifecycle={"on_timeout": "pause"})
    try:
        sbx.files.write("/tmp/x", "y")
        _wait_state(sbx.sandbox_id, SandboxState.PAUSED)
        paused = Sandbox.get_info(sbx.sandbox_id)
        # Traffic through the proxy resumes it (a paused sandbox cannot answer the read),
        # and its timeout starts again: a later deadline. Not "running now": 2 s after the
        # resume the reaper may have paused it again, which a loaded machine can reach
        # before the next call.
        assert sbx.files.read("/tmp/x") == "y"
        assert Sandbox.get_info(sbx.sandbox_id).end_at > paused.end_at
        _wait_state(sbx.sandbox_id, SandboxState.PAUSED)  # paused again after 2 s more
    finally:
        sbx.kill()


def test_paused_sandbox_is_killed_and_leaves_nothing(serve: Serve) -> None:
    sbx = Sandbox.create("busybox", timeout=120)
    sbx.pause()
    assert Sandbox.kill(sbx.sandbox_id) is True
    assert Sandbox.kill(sbx.sandbox_id) is False
    assert sbx.sandbox_id not in {s.sandbox_id for s in Sandbox.list().next_items()}
    assert serve.leaks().total() == 0, serve.leaks()


def _set_row_state(serve: Serve, sandbox_id: str, state: str) -> None:
    with sqlite3.connect(serve.home / "hutch.db") as db:
        db.execute("UPDATE sandboxes SET state = ? WHERE id = ?", (state, sandbox_id))


def test_crash_mid_pause_is_repaired_on_restart(serve: Serve) -> None:
    running = Sandbox.create("busybox", metadata={"a": "1"}, timeout=300)
    frozen = Sandbox.create("busybox", metadata={"b": "2"}, timeout=300)
    try:
        frozen.pause()
        serve.stop(signal.SIGKILL)
        # Died after recording "pausing": one before runc pause, one after it.
        _set_row_state(serve, running.sandbox_id, "pausing")
        _set_row_state(serve, frozen.sandbox_id, "pausing")
        serve.start()
        info = Sandbox.get_info(running.sandbox_id)
        assert info.state == SandboxState.RUNNING and info.metadata == {"a": "1"}
        assert running.commands.run("echo ok").stdout == "ok\n"
        info = Sandbox.get_info(frozen.sandbox_id)
        assert info.state == SandboxState.PAUSED and info.metadata == {"b": "2"}
        assert Sandbox.connect(frozen.sandbox_id).commands.run("echo ok").stdout == "ok\n"
    finally:
        running.kill()
        frozen.kill()


def test_paused_sandbox_survives_a_host_restart_with_its_files(serve: Serve) -> None:
    """After the host restarted, the frozen processes are gone; the files are not."""
    sbx = Sandbox.create("busybox", metadata={"k": "v"}, timeout=300)
    try:
        boot_id = sbx.commands.run(BOOT_ID).stdout
        sbx.files.write("kept.txt", "still here")
        sbx.pause()
        serve.stop(signal.SIGKILL)
        _lose_container_and_mounts(serve, sbx.sandbox_id)
        serve.start()
        info = Sandbox.get_info(sbx.sandbox_id)
        assert info.state == SandboxState.PAUSED and info.metadata == {"k": "v"}
        with _api(serve) as c:
            assert c.get(f"/sandboxes/{sbx.sandbox_id}").json()["pauseMode"] == "filesystem"
        again = Sandbox.connect(sbx.sandbox_id)
        assert again.files.read("kept.txt") == "still here"
        assert again.commands.run(BOOT_ID).stdout != boot_id
    finally:
        sbx.kill()
    assert serve.leaks().total() == 0, serve.leaks()


def _lose_container_and_mounts(serve: Serve, sandbox_id: str) -> None:
    """What a host restart does to a sandbox: no container, no mount, no netns."""
    from hutch.node.runtime.runc import RuncRuntime

    runtime = RuncRuntime(root=serve.node_settings().runtime_root)
    asyncio.run(runtime.delete(sandbox_id, force=True))
    subprocess.run(["umount", str(serve.home / "sandboxes" / sandbox_id / "rootfs")], check=True)
    subprocess.run(
        ["ip", "netns", "delete", f"{serve.names.netns_prefix}{sandbox_id}"], check=False
    )
