"""Each sandbox's writable layer on a disk of its own (ADR 0023), on real runc.

A disk bomb stops at the sandbox's size with ENOSPC while the node's disk and another
sandbox are untouched; a disk above the node's limit is refused before anything is made;
a filesystem-paused sandbox whose disk was unmounted (as after a host restart) is adopted
and resumed with its files; nothing (mount, loop device, image) is left behind.
"""

from __future__ import annotations

import uuid

import pytest
from nodehelpers import count_leaks

from hutch.node import disk
from hutch.node.app import Node
from hutch.node.sandbox import SandboxRequest
from hutch.node.settings import NodeSettings
from hutch.shared.errors import InvalidArgumentError

MIB = 1 << 20


def new_id() -> str:
    return f"hsm-{uuid.uuid4().hex[:12]}"


async def sh(node: Node, sid: str, script: str) -> tuple[int, str]:
    result = await node.manager.exec(sid, ["/bin/sh", "-c", script], timeout_s=60)
    return result.exit_code, (result.stdout + result.stderr).decode(errors="replace")


async def test_disk_bomb_stops_at_the_sandbox_disk_size(node: Node, settings: NodeSettings) -> None:
    bomb, other = new_id(), new_id()
    await node.manager.create(SandboxRequest(sandbox_id=bomb, template="busybox", disk_mb=64))
    await node.manager.create(SandboxRequest(sandbox_id=other, template="busybox", disk_mb=64))
    image = disk.image_path(settings.sandboxes_dir / bomb)
    assert image.stat().st_size == 64 * MIB
    allocated = image.stat().st_blocks * 512
    assert allocated >= 64 * MIB  # reserved in full at create

    code, out = await sh(node, bomb, "dd if=/dev/zero of=/bomb bs=1M count=200; echo rc=$?")
    assert "No space left on device" in out, out
    assert "rc=1" in out, out
    code, df = await sh(node, bomb, "df -k / | tail -1")
    size_kb, used_kb, avail_kb = (int(x) for x in df.split()[1:4])
    assert 50 * 1024 < size_kb <= 64 * 1024, df
    assert avail_kb < 1024 and used_kb > 50 * 1024, df  # less than one dd block left
    # All the bomb wrote is inside the image, which took nothing more from the node's disk.
    assert image.stat().st_size == 64 * MIB
    assert image.stat().st_blocks * 512 == allocated
    # The other sandbox writes as before; the bomb can still read, and free what it wrote.
    code, out = await sh(node, other, "dd if=/dev/zero of=/ok bs=1M count=20 && echo wrote")
    assert code == 0 and "wrote" in out, out
    code, out = await sh(node, bomb, "rm /bomb && echo hi > /after && cat /after")
    assert code == 0 and out.strip() == "hi", out

    await node.manager.kill(bomb)
    await node.manager.kill(other)
    assert not image.exists()
    assert (await count_leaks(settings, node.manager._runtime)).total() == 0


async def test_disk_above_the_node_limit_is_refused_before_anything_is_made(
    node: Node, settings: NodeSettings
) -> None:
    limit = node.manager.config.max_disk_mb
    with pytest.raises(InvalidArgumentError, match=f"limit of {limit} MB"):
        await node.manager.create(
            SandboxRequest(sandbox_id=new_id(), template="busybox", disk_mb=limit + 1)
        )
    assert node.manager.list() == []
    assert (await count_leaks(settings, node.manager._runtime)).total() == 0


async def test_disk_of_a_template_build_sandbox_is_the_node_limit(
    node: Node, settings: NodeSettings
) -> None:
    object.__setattr__(node.manager.config, "max_disk_mb", 256)
    template = await node.templates.get("busybox")
    sid = new_id()
    built = await node.manager.create(
        SandboxRequest(sandbox_id=sid, template="busybox", artifact=template)
    )
    assert built.disk_mb == 256
    assert disk.image_path(settings.sandboxes_dir / sid).stat().st_size == 256 * MIB
    await node.manager.kill(sid)
    assert (await count_leaks(settings, node.manager._runtime)).total() == 0


async def test_disk_kept_across_a_filesystem_pause_and_a_lost_mount(
    node: Node, settings: NodeSettings
) -> None:
    sid = new_id()
    await node.manager.create(SandboxRequest(sandbox_id=sid, template="busybox", disk_mb=32))
    code, _ = await sh(node, sid, "echo kept > /home/user/f")
    assert code == 0
    await node.manager.pause(sid, keep_memory=False)
    sandbox_dir = settings.sandboxes_dir / sid
    # A host restart loses every mount: the overlay and the disk (the loop device with it).
    from hutch.node import rootfs

    rootfs.unmount_rootfs(sandbox_dir)
    disk.detach_disk(sandbox_dir)
    assert disk.loop_devices_under(sandbox_dir) == []
    node.manager._host.running.clear()

    report = await node.manager.reconcile([], paused_ids=[sid])
    assert report.adopted == [sid] and report.paused == {sid: "filesystem"}
    sandbox, kept = await node.manager.resume(sid)
    assert kept is False and sandbox.disk_mb == 32
    code, out = await sh(node, sid, "cat /home/user/f; df -k / | tail -1")
    assert code == 0 and out.startswith("kept\n"), out
    assert int(out.splitlines()[1].split()[1]) <= 32 * 1024

    await node.manager.kill(sid)
    assert (await count_leaks(settings, node.manager._runtime)).total() == 0
