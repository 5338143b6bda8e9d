"""Snapshots and fork through a real ``hutch serve``: files (deletions included) carried
into new sandboxes, which then diverge; memory is not (a fresh boot)."""

from __future__ import annotations

import pytest
from e2b import Sandbox

from .serveproc import Serve

pytestmark = pytest.mark.root

BOOT_ID = "cat /proc/sys/kernel/random/boot_id"


def test_snapshot_then_many_sandboxes_from_it(serve: Serve) -> None:
    sbx = Sandbox.create("busybox", timeout=120)
    made: list[Sandbox] = []
    snapshot_id = None
    try:
        sbx.commands.run("mkdir -p /tmp/d && echo one > /tmp/d/f && rm /bin/arch", user="root")
        boot_id = sbx.commands.run(BOOT_ID).stdout
        info = sbx.create_snapshot()
        snapshot_id = info.snapshot_id
        sbx.commands.run("echo after > /tmp/d/f", user="root")  # the source goes on
        for _ in range(2):
            new = Sandbox.create(snapshot_id, timeout=120)
            made.append(new)
            assert new.files.read("/tmp/d/f") == "one\n"
            assert new.commands.run("test -e /bin/arch || echo gone").stdout == "gone\n"
            assert new.commands.run("test -e /bin/ash && echo there").stdout == "there\n"
            assert new.commands.run(BOOT_ID).stdout != boot_id
        made[0].commands.run("echo mine > /tmp/d/f", user="root")
        assert made[1].files.read("/tmp/d/f") == "one\n"
        assert sbx.files.read("/tmp/d/f") == "after\n"
        # A paused sandbox can be snapshotted, and a snapshot of a snapshot keeps both layers.
        made[0].pause()
        second = made[0].create_snapshot("second-snap")
        deep = Sandbox.create("second-snap", timeout=60)
        made.append(deep)
        assert deep.files.read("/tmp/d/f") == "mine\n"
        assert deep.commands.run("test -e /bin/arch || echo gone").stdout == "gone\n"
        assert Sandbox.delete_snapshot(second.snapshot_id) is True
        # Deleting a snapshot leaves the sandboxes made from it working.
        assert deep.files.read("/tmp/d/f") == "mine\n"
    finally:
        for s in [sbx, *made]:
            s.kill()
        if snapshot_id is not None:
            Sandbox.delete_snapshot(snapshot_id)
    assert serve.leaks().total() == 0, serve.leaks()
    assert not list((serve.home / "templates" / ".snapshots").iterdir())


def test_fork_copies_diverge(serve: Serve) -> None:
    sbx = Sandbox.create("busybox", metadata={"task": "t"}, timeout=120)
    forks: list[Sandbox] = []
    try:
        sbx.files.write("/tmp/state", "base")
        results = sbx.fork(count=2, timeout=60)
        forks = [f for f in results if isinstance(f, Sandbox)]
        assert len(forks) == 2, results
        for i, f in enumerate(forks):
            assert f.files.read("/tmp/state") == "base"
            assert f.get_info().metadata == {"task": "t"}
            f.files.write("/tmp/state", f"fork{i}")
        assert [f.files.read("/tmp/state") for f in forks] == ["fork0", "fork1"]
        assert sbx.files.read("/tmp/state") == "base"
        assert sbx.commands.run("echo alive").stdout == "alive\n"  # thawed after the copy
    finally:
        for s in [sbx, *forks]:
            s.kill()
        for snap in Sandbox.list_snapshots(sandbox_id=sbx.sandbox_id).next_items():
            Sandbox.delete_snapshot(snap.snapshot_id)
    assert serve.leaks().total() == 0, serve.leaks()
