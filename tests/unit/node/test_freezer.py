"""``runtime/freezer.py``: which cgroup a pid's freezer is trusted for, and settling."""

from __future__ import annotations

from pathlib import Path

from hutch.node.runtime.freezer import Freezer, freezer_of, set_frozen


def _host(tmp_path: Path, *, leaf: str, v2: bool = False) -> tuple[Path, Path]:
    """A fake /proc (pid 42) and cgroup mounts: v1 freezer, or a v2 unified hierarchy."""
    proc, cg = tmp_path / "proc", tmp_path / "cg"
    (proc / "self").mkdir(parents=True)
    (proc / "42").mkdir()
    if v2:
        mountinfo = f"30 1 0:26 / {cg} rw - cgroup2 cgroup2 rw\n"
        line = f"0::/node/{leaf}\n"
        target = cg / "node" / leaf
        target.mkdir(parents=True)
        (target / "cgroup.freeze").write_text("0\n")
        (target / "cgroup.events").write_text("populated 1\nfrozen 0\n")
    else:
        mountinfo = f"30 1 0:26 / {cg} rw - cgroup cgroup rw,freezer\n"
        line = f"7:freezer:/node/{leaf}\n"
        target = cg / "node" / leaf
        target.mkdir(parents=True)
        (target / "freezer.state").write_text("THAWED\n")
    (proc / "self" / "mountinfo").write_text(mountinfo)
    (proc / "42" / "cgroup").write_text(line)
    return proc, target


def test_a_pid_is_trusted_only_in_the_cgroup_named_after_the_container(tmp_path: Path) -> None:
    proc, target = _host(tmp_path, leaf="sbx1")
    assert freezer_of(42, "sbx1", proc=proc) == Freezer(target / "freezer.state", None)
    assert freezer_of(42, "sbx2", proc=proc) is None  # a reused pid: another cgroup
    assert freezer_of(43, "sbx1", proc=proc) is None  # a pid that is gone
    assert freezer_of(0, "sbx1", proc=proc) is None  # no pid known


async def test_v1_freeze_and_thaw_write_freezer_state(tmp_path: Path) -> None:
    proc, target = _host(tmp_path, leaf="sbx1")
    freezer = freezer_of(42, "sbx1", proc=proc)
    assert freezer is not None
    assert await set_frozen(freezer, True)
    assert (target / "freezer.state").read_text() == "FROZEN"
    assert await set_frozen(freezer, False)
    assert (target / "freezer.state").read_text() == "THAWED"


async def test_v2_waits_for_cgroup_events_and_gives_up_after_its_bound(tmp_path: Path) -> None:
    proc, target = _host(tmp_path, leaf="sbx1", v2=True)
    freezer = freezer_of(42, "sbx1", proc=proc)
    assert freezer == Freezer(target / "cgroup.freeze", target / "cgroup.events")
    # Nothing here plays the kernel: cgroup.events keeps saying "frozen 0".
    assert not await set_frozen(freezer, True, settle_s=0.05)
    assert (target / "cgroup.freeze").read_text() == "1"
    (target / "cgroup.events").write_text("populated 1\nfrozen 1\n")
    assert await set_frozen(freezer, True)
    gone = Freezer(tmp_path / "gone" / "freezer.state", None)  # the container is gone
    assert not await set_frozen(gone, True)
