"""The Runtime seam against real runc and runsc, a busybox overlay rootfs, real cgroups.

Tests that look at host-kernel state of the sandbox's processes (their /proc status,
seccomp, pids accounting, the freezer) run on runc only: under gVisor those processes
live in gVisor's own kernel.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hutch.node import rootfs
from hutch.node.runtime.base import RuntimeFailedError, RuntimeStatus
from hutch.node.runtime.runc import RuncRuntime
from hutch.shared.errors import AlreadyExistsError, NotFoundError
from tests.conftest import machine_lacks

pytestmark = pytest.mark.root
runc_only = pytest.mark.parametrize("runtime", ["runc"], indirect=True)


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie awaiting its reaper is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


async def test_runc_create_start_reports_running_with_host_pid(runtime, make_sandbox):
    box = await make_sandbox()
    state = await runtime.state(box.sandbox_id)
    assert state.status is RuntimeStatus.RUNNING
    assert state.pid is not None and Path(f"/proc/{state.pid}").exists()
    assert state.bundle == box.sandbox_dir
    assert await runtime.list() == [box.sandbox_id]


async def test_runc_create_without_start_is_created(runtime, make_sandbox):
    box = await make_sandbox(start=False)
    assert (await runtime.state(box.sandbox_id)).status is RuntimeStatus.CREATED
    await runtime.start(box.sandbox_id)
    assert (await runtime.state(box.sandbox_id)).status is RuntimeStatus.RUNNING


async def test_runc_sandbox_hostname_is_sandbox_id(runtime, make_sandbox):
    box = await make_sandbox()
    result = await runtime.exec(box.sandbox_id, ["hostname"])
    assert result.exit_code == 0
    assert result.stdout.decode().strip() == box.sandbox_id


async def test_runc_sandbox_has_own_pid_namespace(runtime, make_sandbox):
    box = await make_sandbox()
    result = await runtime.exec(box.sandbox_id, ["cat", "/proc/1/cmdline"])
    assert result.stdout.split(b"\0")[0] == b"/sbin/tini"
    host_pid = (await runtime.state(box.sandbox_id)).pid
    ps = await runtime.exec(box.sandbox_id, ["ps", "-o", "pid"])
    pids = {int(line) for line in ps.stdout.decode().split()[1:]}
    assert 1 in pids and host_pid not in pids, ps.stdout  # a numbering of its own


async def test_runc_sandbox_in_a_prepared_netns_starts(runtime, make_sandbox, netns):
    # runsc needs its /proc/sys/net workaround for exactly this case (HOST-NOTES).
    box = await make_sandbox(netns_path=netns)
    assert (await runtime.state(box.sandbox_id)).status is RuntimeStatus.RUNNING
    result = await runtime.exec(box.sandbox_id, ["cat", "/proc/net/dev"])
    assert b"lo:" in result.stdout


@runc_only
async def test_runc_sandbox_namespaces_differ_from_the_hosts(runtime, make_sandbox):
    # (gVisor's sandbox process stays in the host's pid namespace; its kernel makes its own.)
    box = await make_sandbox()
    host_pid = (await runtime.state(box.sandbox_id)).pid
    for ns in ("pid", "mnt", "uts", "ipc", "net", "cgroup"):
        assert os.readlink(f"/proc/{host_pid}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}")


@runc_only
async def test_runc_sandbox_runs_as_requested_user(runtime, make_sandbox):
    box = await make_sandbox(uid=1000, gid=1000, additional_gids=[27], cwd="/home/user")
    result = await runtime.exec(box.sandbox_id, ["id"], user=(1000, 1000))
    assert b"uid=1000" in result.stdout
    status = Path(f"/proc/{(await runtime.state(box.sandbox_id)).pid}/status").read_text()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    groups = next(line for line in status.splitlines() if line.startswith("Groups:"))
    assert uid_line.split()[1:] == ["1000"] * 4
    assert groups.split()[1:] == ["27"]
    # A non-root process keeps no effective capabilities after execve.
    cap_eff = next(line for line in status.splitlines() if line.startswith("CapEff:"))
    assert int(cap_eff.split()[1], 16) == 0


async def test_runc_memory_cpu_pids_limits_reach_the_cgroup(runtime, make_sandbox, cgroups):
    box = await make_sandbox(memory_mb=64, cpu_count=0.5, pids_limit=64)
    dirs = cgroups(box.sandbox_id)
    assert int((dirs["memory"] / "memory.limit_in_bytes").read_text()) == 64 * 1024 * 1024
    assert int((dirs["cpu"] / "cpu.cfs_quota_us").read_text()) == 50_000
    assert int((dirs["cpu"] / "cpu.cfs_period_us").read_text()) == 100_000
    assert (dirs["pids"] / "pids.max").read_text().strip() == "64"
    pid = (await runtime.state(box.sandbox_id)).pid
    assert str(pid) in (dirs["memory"] / "cgroup.procs").read_text().split()


@runc_only
async def test_runc_pids_limit_stops_a_fork_bomb(runtime, make_sandbox, cgroups):
    box = await make_sandbox(pids_limit=32)
    # Forks until fork fails; tini reaps. The count stays at the limit, the host is untouched.
    bomb = (
        "i=0; while [ $i -lt 200 ]; do sleep 1000 </dev/null >/dev/null 2>&1 & i=$((i+1)); "
        "done 2>/dev/null; echo done"
    )
    result = await runtime.exec(box.sandbox_id, ["sh", "-c", bomb])
    dirs = cgroups(box.sandbox_id)
    current = int((dirs["pids"] / "pids.current").read_text())
    assert current <= 32
    events = (dirs["pids"] / "pids.events").read_text()
    assert int(events.split()[-1]) > 0, events  # the kernel refused forks at the limit
    assert result.exit_code in (0, 2) or result.stderr
    # The host can still fork, and the runtime can still stop the sandbox.
    await runtime.delete(box.sandbox_id, force=True)
    with pytest.raises(NotFoundError):
        await runtime.state(box.sandbox_id)


@runc_only
async def test_runc_seccomp_denies_user_namespaces_with_eperm(runtime, make_sandbox):
    control = await make_sandbox(use_seccomp=False)
    baseline = await runtime.exec(control.sandbox_id, ["unshare", "-U", "true"])
    if baseline.exit_code != 0:
        machine_lacks(f"this kernel refuses user namespaces anyway: {baseline.stderr!r}")
    box = await make_sandbox()
    result = await runtime.exec(box.sandbox_id, ["unshare", "-U", "true"])
    assert result.exit_code != 0
    assert b"Operation not permitted" in result.stderr


@runc_only
async def test_runc_seccomp_filter_is_installed_and_denies_swapoff(runtime, make_sandbox):
    box = await make_sandbox()
    status = Path(f"/proc/{(await runtime.state(box.sandbox_id)).pid}/status").read_text()
    assert "Seccomp:\t2" in status  # SECCOMP_MODE_FILTER
    result = await runtime.exec(box.sandbox_id, ["swapoff", "/nonexistent"])
    assert result.exit_code != 0
    assert b"Operation not permitted" in result.stderr, result.stderr


@runc_only
async def test_runc_pause_and_resume_use_the_freezer(runtime, make_sandbox, cgroups):
    box = await make_sandbox()
    await runtime.pause(box.sandbox_id)
    assert (await runtime.state(box.sandbox_id)).status is RuntimeStatus.PAUSED
    dirs = cgroups(box.sandbox_id)
    assert (dirs["freezer"] / "freezer.state").read_text().strip() == "FROZEN"
    await runtime.resume(box.sandbox_id)
    assert (await runtime.state(box.sandbox_id)).status is RuntimeStatus.RUNNING
    assert (await runtime.exec(box.sandbox_id, ["true"])).exit_code == 0


@runc_only
async def test_runc_pause_with_the_pid_freezes_the_cgroup_runc_reads(
    runtime, make_sandbox, cgroups
):
    """With its init's pid, pause/resume write the freezer themselves (ADR 0040); runc's own
    state, resume and delete agree with what they wrote, and a wrong pid falls back to runc."""
    box = await make_sandbox()
    pid = (await runtime.state(box.sandbox_id)).pid
    freezer = cgroups(box.sandbox_id)["freezer"] / "freezer.state"
    await runtime.pause(box.sandbox_id, pid=pid)
    assert freezer.read_text().strip() == "FROZEN"
    assert (await runtime.state(box.sandbox_id)).status is RuntimeStatus.PAUSED
    await runtime.resume(box.sandbox_id)  # runc itself thaws what was frozen directly
    assert (await runtime.state(box.sandbox_id)).status is RuntimeStatus.RUNNING
    await runtime.pause(box.sandbox_id)
    await runtime.resume(box.sandbox_id, pid=pid)  # and the other way round
    assert freezer.read_text().strip() == "THAWED"
    assert (await runtime.exec(box.sandbox_id, ["true"])).exit_code == 0
    # This test's own pid is in another cgroup: not trusted, runc pauses instead.
    await runtime.pause(box.sandbox_id, pid=os.getpid())
    assert (await runtime.state(box.sandbox_id)).status is RuntimeStatus.PAUSED
    await runtime.resume(box.sandbox_id, pid=os.getpid())
    assert (await runtime.state(box.sandbox_id)).status is RuntimeStatus.RUNNING
    await runtime.pause(box.sandbox_id, pid=pid)
    await runtime.delete(box.sandbox_id, force=True)  # a directly frozen one deletes too
    assert await runtime.list() == []


async def test_runc_force_delete_of_paused_sandbox(runtime, make_sandbox):
    box = await make_sandbox()
    await runtime.pause(box.sandbox_id)
    await runtime.delete(box.sandbox_id, force=True)
    assert await runtime.list() == []


async def test_runc_kill_then_delete_leaves_nothing_behind(
    runtime, runc_root, make_sandbox, cgroups
):
    box = await make_sandbox()
    pid = (await runtime.state(box.sandbox_id)).pid
    await runtime.kill(box.sandbox_id, signal=9)
    await runtime.wait(box.sandbox_id)
    assert (await runtime.state(box.sandbox_id)).status is RuntimeStatus.STOPPED
    await runtime.kill(box.sandbox_id)  # idempotent on a stopped sandbox
    await runtime.wait(box.sandbox_id)  # returns at once for a stopped sandbox
    await runtime.delete(box.sandbox_id)
    rootfs.remove_rootfs(box.sandbox_dir)

    assert await runtime.list() == []
    assert not (runc_root / box.sandbox_id).exists()
    assert not _alive(pid)
    assert not any(p.exists() for p in cgroups(box.sandbox_id).values())
    assert rootfs.find_mounts_under(box.sandbox_dir) == []


async def test_runc_unknown_sandbox_raises_not_found(runtime):
    for call in (
        runtime.state("hutchrt-test-nope"),
        runtime.kill("hutchrt-test-nope"),
        runtime.delete("hutchrt-test-nope", force=True),
        runtime.pause("hutchrt-test-nope"),
        runtime.start("hutchrt-test-nope"),
    ):
        with pytest.raises(NotFoundError):
            await call


async def test_runc_list_on_fresh_root_is_empty(tmp_path):
    assert await RuncRuntime(root=tmp_path / "never-created").list() == []


async def test_runc_bad_bundle_raises_runtime_failed(runtime, tmp_path):
    bundle = tmp_path / "bad"
    bundle.mkdir()
    (bundle / "config.json").write_text('{"ociVersion": "1.0.2", "process": {}}')
    with pytest.raises(RuntimeFailedError) as info:
        await runtime.create(bundle, sandbox_id="hutchrt-test-bad")
    assert "runtime failed" in info.value.public_message
    assert await runtime.list() == []


async def test_runc_duplicate_id_raises_already_exists(runtime, make_sandbox):
    box = await make_sandbox()
    with pytest.raises(AlreadyExistsError):
        await runtime.create(box.sandbox_dir, sandbox_id=box.sandbox_id)
    assert (await runtime.state(box.sandbox_id)).status is RuntimeStatus.RUNNING


async def test_runc_output_goes_to_the_output_file(runtime, make_sandbox):
    box = await make_sandbox(args=["sh", "-c", "echo hello-out; echo hello-err >&2"])
    await runtime.wait(box.sandbox_id)  # the process has written and exited
    text = box.output.read_text()
    assert "hello-out" in text and "hello-err" in text


async def test_runc_wait_returns_when_the_main_process_exits(runtime, make_sandbox):
    box = await make_sandbox(args=["/bin/true"])
    await runtime.wait(box.sandbox_id)
    assert (await runtime.state(box.sandbox_id)).status is RuntimeStatus.STOPPED
