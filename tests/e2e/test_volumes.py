"""Volumes end to end: the official SDK through a real ``hutch serve`` (issue 3, mounts)."""

from __future__ import annotations

import os
import signal
import subprocess

import httpx
import pytest
from e2b import Sandbox, SandboxQuery, Volume
from e2b.sandbox.commands.command_handle import CommandExitException

from . import test_pool
from .serveproc import Serve

pytestmark = pytest.mark.root


@pytest.fixture
def volumes(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> Serve:
    monkeypatch.setenv("E2B_VOLUME_API_URL", serve.api_url)
    return serve


def _key() -> str:
    return os.environ["E2B_API_KEY"]


def _live_ids() -> set[str]:
    return {s.sandbox_id for s in Sandbox.list(query=SandboxQuery()).next_items()}


def _host_holds(volume_id: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        mounts = f.read()
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    return volume_id in mounts or volume_id in loops


def test_two_sandboxes_share_a_volume_with_the_content_api(volumes: Serve) -> None:
    vol = Volume.create("e2e-shared")
    vol.write_file("/from-api.txt", "written through the API\n")
    a = Sandbox.create("busybox", volume_mounts={"/mnt/data": vol})  # by Volume (its name)
    b = Sandbox.create("busybox", volume_mounts={"/mnt/data": vol.volume_id})  # by id
    try:
        assert a.commands.run("cat /mnt/data/from-api.txt").stdout == "written through the API\n"
        assert a.get_info().volume_mounts == [{"name": "e2e-shared", "path": "/mnt/data"}]
        # A write in one sandbox is visible in the other and through the API once it returns.
        a.commands.run("echo hello from a > /mnt/data/a.txt")
        assert b.commands.run("cat /mnt/data/a.txt").stdout == "hello from a\n"
        assert vol.read_file("/a.txt") == "hello from a\n"
        # And the other way round.
        vol.write_file("/dir/later.txt", "later")
        assert b.commands.run("cat /mnt/data/dir/later.txt").stdout == "later"
        # Ownership: the sandbox's user (uid 1000) owns what it writes, and what the API
        # writes by default is that user's too, so it can change it.
        assert a.commands.run("stat -c %u:%g /mnt/data/a.txt").stdout.strip() == "1000:1000"
        assert a.commands.run("id -u").stdout.strip() == "1000"
        assert vol.get_info("/a.txt").uid == 1000
        a.commands.run("echo more >> /mnt/data/dir/later.txt && rm /mnt/data/from-api.txt")
        assert vol.read_file("/dir/later.txt") == "latermore\n"
        assert not vol.exists("/from-api.txt")
        # Deleting a mounted volume: 409 naming both sandboxes.
        r = httpx.delete(f"{volumes.api_url}/volumes/e2e-shared", headers={"X-API-Key": _key()})
        assert r.status_code == 409, r.text
        assert a.sandbox_id in r.json()["message"] and b.sandbox_id in r.json()["message"]
        assert a.commands.run("cat /mnt/data/a.txt").stdout == "hello from a\n"
        # force=true kills them first, then deletes.
        r = httpx.delete(
            f"{volumes.api_url}/volumes/e2e-shared",
            params={"force": "true"},
            headers={"X-API-Key": _key()},
        )
        assert r.status_code == 204, r.text
        assert a.sandbox_id not in _live_ids() and b.sandbox_id not in _live_ids()
        assert not _host_holds(vol.volume_id)
    finally:
        Sandbox.kill(a.sandbox_id)
        Sandbox.kill(b.sandbox_id)
        Volume.destroy(vol.volume_id)
    assert volumes.leaks().total() == 0, volumes.leaks()


def test_quota_is_enospc_inside_and_507_outside(volumes: Serve) -> None:
    r = httpx.post(
        f"{volumes.api_url}/volumes",
        json={"name": "e2e-small", "sizeMB": 16},
        headers={"X-API-Key": _key()},
    )
    assert r.status_code == 201
    vol = Volume.connect(r.json()["volumeID"])
    vol.write_file("/keep.txt", "keep me")
    sbx = Sandbox.create("busybox", volume_mounts={"/data": "e2e-small"})
    try:
        with pytest.raises(CommandExitException) as info:
            sbx.commands.run("dd if=/dev/zero of=/data/fill bs=1M count=64")
        assert "No space left" in info.value.stderr
        assert sbx.commands.run("cat /data/keep.txt").stdout == "keep me"
        put = httpx.put(
            f"{volumes.api_url}/volumecontent/{vol.volume_id}/file",
            params={"path": "more.bin"},
            content=b"x" * (1 << 20),
            headers={"Authorization": f"Bearer {vol.token}"},
        )
        assert put.status_code == 507
        sbx.commands.run("rm /data/fill")
        assert vol.write_file("/more.bin", b"x" * (1 << 20)).size == 1 << 20
        assert vol.read_file("/keep.txt") == "keep me"
    finally:
        sbx.kill()
    # Killed: nothing mounts it any more, so a plain delete works and frees everything.
    assert Volume.destroy(vol.volume_id) is True
    assert not _host_holds(vol.volume_id)
    assert volumes.leaks().total() == 0, volumes.leaks()


def test_bad_mounts_are_refused(volumes: Serve) -> None:
    Volume.create("e2e-bad")
    before = _live_ids()
    for mounts, status in (
        ({"/mnt/x": "no-such-volume"}, 404),
        ({"relative": "e2e-bad"}, 400),
        ({"/": "e2e-bad"}, 400),
        ({"/proc/x": "e2e-bad"}, 400),
        ({"/a/../b": "e2e-bad"}, 400),
        ({"/a": "e2e-bad", "/a/b": "e2e-bad"}, 400),
    ):
        r = httpx.post(
            f"{volumes.api_url}/sandboxes",
            json={
                "templateID": "busybox",
                "volumeMounts": [{"name": n, "path": p} for p, n in mounts.items()],
            },
            headers={"X-API-Key": _key()},
        )
        assert r.status_code == status, (mounts, r.text)
    assert _live_ids() == before
    Volume.destroy("e2e-bad")


def test_restart_keeps_one_filesystem_and_reconcile_releases_it(volumes: Serve) -> None:
    vol = Volume.create("e2e-restart")
    sbx = Sandbox.create("busybox", volume_mounts={"/mnt/v": vol}, timeout=300)
    try:
        sbx.commands.run("echo before > /mnt/v/f")
        assert volumes.stop(signal.SIGKILL) == -signal.SIGKILL
        volumes.start()
        # The adopted sandbox and the re-mounted content API see one filesystem (the
        # image's loop device is reused, never attached twice).
        vol.write_file("/g", "after restart")
        assert sbx.commands.run("cat /mnt/v/g").stdout == "after restart"
        sbx.commands.run("echo again >> /mnt/v/f")
        assert vol.read_file("/f") == "before\nagain\n"
        loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
        assert loops.count(vol.volume_id) == 1, loops
        # Stop serve gracefully: the host mount goes, the sandbox keeps its bind mount.
        volumes.stop()
        volumes.start()
        assert sbx.commands.run("cat /mnt/v/g").stdout == "after restart"
    finally:
        sbx.kill()
    assert Volume.destroy(vol.volume_id) is True
    assert not _host_holds(vol.volume_id)
    assert volumes.leaks().total() == 0, volumes.leaks()


def test_paused_sandbox_keeps_its_volume_and_blocks_delete(volumes: Serve) -> None:
    vol = Volume.create("e2e-pause")
    sbx = Sandbox.create("busybox", volume_mounts={"/mnt/v": vol}, timeout=120)
    try:
        sbx.commands.run("echo one > /mnt/v/f")
        # Files-only pause: the processes go; resume boots again and binds the volume again.
        assert sbx.pause(mode="filesystem") is True
        r = httpx.delete(f"{volumes.api_url}/volumes/e2e-pause", headers={"X-API-Key": _key()})
        assert r.status_code == 409 and sbx.sandbox_id in r.json()["message"]
        vol.write_file("/while-paused", "yes")
        again = Sandbox.connect(sbx.sandbox_id)
        assert again.commands.run("cat /mnt/v/f /mnt/v/while-paused").stdout == "one\nyes"
        again.commands.run("echo two >> /mnt/v/f")
        assert vol.read_file("/f") == "one\ntwo\n"
    finally:
        sbx.kill()
    assert Volume.destroy(vol.volume_id) is True
    assert not _host_holds(vol.volume_id)


#: ``test_pool``'s fixture: restarts the session's serve with a busybox pool for this module.
pooled = test_pool.pooled


@pytest.mark.usefixtures("pooled")
def test_a_create_with_volumes_never_takes_a_pool_member(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pool members were booted without bind mounts: a create with volumes boots cold."""
    monkeypatch.setenv("E2B_VOLUME_API_URL", serve.api_url)
    idle = test_pool._wait_for_pool(serve)
    vol = Volume.create("e2e-pool")
    sbx = Sandbox.create("busybox", volume_mounts={"/mnt/p": vol})
    try:
        vol.write_file("/seen", "yes")
        assert sbx.commands.run("cat /mnt/p/seen").stdout == "yes"
        assert test_pool._idle_members(serve) == idle
    finally:
        sbx.kill()
    Volume.destroy(vol.volume_id)
