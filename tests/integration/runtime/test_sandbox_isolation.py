"""What the generated spec gives a sandbox, checked from inside a real runc container."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hutch.node import rootfs
from hutch.node.bundle import DEFAULT_CAPABILITIES, BindMount

# The spec's seccomp, capabilities, masks and devices are enforced by the host kernel under
# runc; gVisor has its own kernel in between and its own answers, so these are runc's.
pytestmark = [pytest.mark.root, pytest.mark.parametrize("runtime", ["runc"], indirect=True)]

#: Capability numbers from <linux/capability.h>, for decoding /proc/<pid>/status.
_CAP_BITS = {
    "CAP_CHOWN": 0,
    "CAP_DAC_OVERRIDE": 1,
    "CAP_FOWNER": 3,
    "CAP_FSETID": 4,
    "CAP_KILL": 5,
    "CAP_SETGID": 6,
    "CAP_SETUID": 7,
    "CAP_SETPCAP": 8,
    "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_RAW": 13,
    "CAP_SYS_CHROOT": 18,
    "CAP_MKNOD": 27,
    "CAP_AUDIT_WRITE": 29,
    "CAP_SETFCAP": 31,
}


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, v in (line.split(":", 1) for line in lines)}


async def test_spec_bounding_set_is_dockers_default_and_setuid_stays_possible(
    runtime, make_sandbox
):
    box = await make_sandbox()
    status = _status((await runtime.state(box.sandbox_id)).pid)
    expected = sum(1 << _CAP_BITS[c] for c in DEFAULT_CAPABILITIES)
    assert int(status["CapBnd"], 16) == expected
    assert int(status["CapEff"], 16) == expected  # root inside keeps the default set
    assert status["NoNewPrivs"] == "0"  # so a setuid sudo can work


async def test_spec_dev_holds_only_the_standard_devices(runtime, make_sandbox):
    box = await make_sandbox()
    result = await runtime.exec(box.sandbox_id, ["ls", "/dev"])
    names = set(result.stdout.decode().split())
    assert {"null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm"} <= names
    devices = names - {"pts", "shm", "mqueue", "stdin", "stdout", "stderr", "fd", "core"}
    assert devices == {"null", "zero", "full", "random", "urandom", "tty", "ptmx"}
    # mknod is allowed as a capability but the device cgroup refuses the node's use.
    made = await runtime.exec(
        box.sandbox_id, ["sh", "-c", "mknod /tmp/sda b 8 0 && head -c1 /tmp/sda"]
    )
    assert made.exit_code != 0


async def test_spec_masks_and_readonly_paths(runtime, make_sandbox):
    box = await make_sandbox()
    # /proc/timer_list lists host timers (with pids); masked, it reads as /dev/null.
    assert Path("/proc/timer_list").read_bytes()
    masked = await runtime.exec(box.sandbox_id, ["sh", "-c", "wc -c < /proc/timer_list"])
    assert masked.stdout.strip() == b"0"
    sysrq = await runtime.exec(box.sandbox_id, ["sh", "-c", "echo h > /proc/sysrq-trigger"])
    assert sysrq.exit_code != 0
    sys_write = await runtime.exec(box.sandbox_id, ["touch", "/sys/kernel/x"])
    assert sys_write.exit_code != 0


async def test_spec_readonly_rootfs_and_bind_mounts(runtime, make_sandbox, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "hello").write_text("from host")
    rw = tmp_path / "rw"
    rw.mkdir()
    box = await make_sandbox(
        readonly_rootfs=True,
        bind_mounts=[
            BindMount(source=shared, destination="/mnt/ro", read_only=True),
            BindMount(source=rw, destination="/mnt/rw"),
        ],
    )
    sid = box.sandbox_id
    assert (await runtime.exec(sid, ["cat", "/mnt/ro/hello"])).stdout == b"from host"
    assert (await runtime.exec(sid, ["touch", "/mnt/ro/x"])).exit_code != 0
    assert (await runtime.exec(sid, ["touch", "/etc/x"])).exit_code != 0
    assert (await runtime.exec(sid, ["sh", "-c", "echo hi > /mnt/rw/out"])).exit_code == 0
    assert (rw / "out").read_text() == "hi\n"


async def test_spec_writes_land_in_the_upper_dir_not_the_template(
    runtime, make_sandbox, template_dir
):
    box = await make_sandbox()
    result = await runtime.exec(box.sandbox_id, ["sh", "-c", "echo x > /etc/written; rm /bin/vi"])
    assert result.exit_code == 0
    assert (rootfs.upper_dir(box.sandbox_dir) / "etc/written").read_text() == "x\n"
    assert not (template_dir / "etc/written").exists()
    assert (template_dir / "bin/vi").is_symlink()


async def test_spec_joins_the_given_netns(runtime, make_sandbox, netns):
    box = await make_sandbox(netns_path=netns)
    pid = (await runtime.state(box.sandbox_id)).pid
    assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(netns).st_ino


async def test_spec_without_netns_gets_a_private_one(runtime, make_sandbox):
    box = await make_sandbox()
    pid = (await runtime.state(box.sandbox_id)).pid
    assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
    links = await runtime.exec(box.sandbox_id, ["cat", "/proc/net/dev"])
    interfaces = {line.split(":")[0].strip() for line in links.stdout.decode().splitlines()[2:]}
    assert interfaces == {"lo"}


async def test_spec_memory_limit_kills_inside_the_cgroup_only(runtime, make_sandbox, cgroups):
    box = await make_sandbox(memory_mb=32)
    # Allocate ~64 MB in a shell variable: the kernel's OOM killer acts inside the cgroup.
    hog = "x=$(head -c 67108864 /dev/zero | tr '\\0' a); echo survived"
    result = await runtime.exec(box.sandbox_id, ["sh", "-c", hog])
    assert b"survived" not in result.stdout
    oom = (cgroups(box.sandbox_id)["memory"] / "memory.oom_control").read_text()
    assert "oom_kill 0" not in oom
