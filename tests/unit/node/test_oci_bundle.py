"""build_spec: the OCI runtime spec computed from a SandboxSpec (pure, no IO)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from hutch.node.bundle import (
    DEFAULT_CAPABILITIES,
    BindMount,
    SandboxSpec,
    build_spec,
    validate_sandbox_id,
    write_bundle,
)
from hutch.shared.errors import InvalidArgumentError


def _spec() -> SandboxSpec:
    return SandboxSpec(sandbox_id="isb123", rootfs=Path("/sb/rootfs"), args=["/sbin/init"])


def _replace(**fields: object) -> SandboxSpec:
    return replace(_spec(), **fields)  # type: ignore[arg-type]


def test_build_spec_sets_hostname_namespaces_and_cgroup_path():
    spec = build_spec(_spec())
    assert spec["hostname"] == "isb123"
    types = [ns["type"] for ns in spec["linux"]["namespaces"]]
    assert sorted(types) == ["cgroup", "ipc", "mount", "network", "pid", "uts"]
    assert spec["linux"]["cgroupsPath"] == "/hutch/isb123"
    assert build_spec(_spec(), cgroup_parent="nodes/a/")["linux"]["cgroupsPath"] == "nodes/a/isb123"


def test_build_spec_joins_a_given_netns_path():
    spec = build_spec(_replace(netns_path=Path("/run/netns/sb")))
    net = next(ns for ns in spec["linux"]["namespaces"] if ns["type"] == "network")
    assert net == {"type": "network", "path": "/run/netns/sb"}


def test_build_spec_resources_from_cpu_memory_pids():
    res = build_spec(_replace(cpu_count=1.5, memory_mb=256, pids_limit=100))["linux"]["resources"]
    assert res["cpu"] == {"quota": 150_000, "period": 100_000}
    assert res["memory"] == {"limit": 256 * 2**20, "swap": 256 * 2**20}
    assert res["pids"] == {"limit": 100}
    assert res["devices"] == [{"allow": False, "access": "rwm"}]


def test_build_spec_process_user_env_caps_and_setuid():
    proc = build_spec(
        _replace(uid=1000, gid=1000, additional_gids=[27], env={"A": "1"}, cwd="/home/user")
    )["process"]
    assert proc["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [27]}
    assert "A=1" in proc["env"] and any(e.startswith("PATH=") for e in proc["env"])
    assert not any(e.startswith("HOSTNAME=") for e in proc["env"])  # ADR 0011
    assert proc["cwd"] == "/home/user"
    assert proc["noNewPrivileges"] is False
    assert proc["capabilities"]["bounding"] == list(DEFAULT_CAPABILITIES)
    assert "inheritable" not in proc["capabilities"] and "ambient" not in proc["capabilities"]
    assert "CAP_SYS_ADMIN" not in DEFAULT_CAPABILITIES


def test_build_spec_caller_path_wins_over_default():
    env = build_spec(_replace(env={"PATH": "/opt/bin"}))["process"]["env"]
    assert [e for e in env if e.startswith("PATH=")] == ["PATH=/opt/bin"]


def test_build_spec_nofile_is_capped_by_max_nofile():
    rl = build_spec(_replace(nofile=65536), max_nofile=20000)["process"]["rlimits"]
    assert rl == [{"type": "RLIMIT_NOFILE", "hard": 20000, "soft": 20000}]


def test_build_spec_mounts_standard_set_and_binds():
    spec = build_spec(
        _replace(
            bind_mounts=[
                BindMount(source=Path("/v/data"), destination="/data", read_only=True),
                BindMount(source=Path("/v/rw"), destination="/rw"),
            ],
            readonly_rootfs=True,
        )
    )
    dests = [m["destination"] for m in spec["mounts"]]
    assert dests[:7] == [
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys",
        "/sys/fs/cgroup",
    ]
    by_dest = {m["destination"]: m for m in spec["mounts"]}
    assert "ro" in by_dest["/sys"]["options"] and "ro" in by_dest["/sys/fs/cgroup"]["options"]
    assert "ro" in by_dest["/data"]["options"] and "ro" not in by_dest["/rw"]["options"]
    assert spec["root"] == {"path": "/sb/rootfs", "readonly": True}
    assert "/proc/kcore" in spec["linux"]["maskedPaths"]
    assert "/proc/sys" in spec["linux"]["readonlyPaths"]


def test_build_spec_seccomp_default_replaced_or_off():
    assert build_spec(_spec())["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ALLOW"
    custom = {"defaultAction": "SCMP_ACT_ERRNO"}
    assert build_spec(_spec(), seccomp=custom)["linux"]["seccomp"] == custom
    assert "seccomp" not in build_spec(_spec(), use_seccomp=False)["linux"]


@pytest.mark.parametrize(
    "sandbox_id", ["", "-a", "a-", "A1", "a_b", "a.b", "x" * 64, "a/b", "../x"]
)
def test_validate_sandbox_id_rejects(sandbox_id):
    with pytest.raises(InvalidArgumentError):
        validate_sandbox_id(sandbox_id)


def test_validate_sandbox_id_accepts_e2b_style_ids():
    assert validate_sandbox_id("i1a2b3c4d5e6f7g8h9") == "i1a2b3c4d5e6f7g8h9"
    assert validate_sandbox_id("x" * 63) == "x" * 63


@pytest.mark.parametrize(
    "fields",
    [
        {"args": []},
        {"cwd": "relative"},
        {"env": {"A=B": "1"}},
        {"env": {"": "1"}},
        {"env": {"A": "nul\0"}},
        {"uid": -1},
        {"additional_gids": [2**32]},
        {"cpu_count": 0},
        {"memory_mb": 1},
        {"pids_limit": 1},
        {"nofile": 3},
        {"bind_mounts": [BindMount(source=Path("/a"), destination="rel")]},
        {"bind_mounts": [BindMount(source=Path("/a"), destination="/x/../etc")]},
        {"bind_mounts": [BindMount(source=Path("/a"), destination="/proc/x")]},
        {"bind_mounts": [BindMount(source=Path("/a"), destination="/")]},
        {"bind_mounts": [BindMount(source=Path("a"), destination="/a")]},
    ],
)
def test_build_spec_rejects_bad_input(fields):
    with pytest.raises(InvalidArgumentError):
        build_spec(_replace(**fields))


@pytest.mark.parametrize("parent", ["", "a/../b"])
def test_build_spec_rejects_bad_cgroup_parent(parent):
    with pytest.raises(InvalidArgumentError):
        build_spec(_spec(), cgroup_parent=parent)


def test_write_bundle_writes_config_json(tmp_path):
    spec = build_spec(_spec())
    path = write_bundle(tmp_path, spec)
    assert path == tmp_path / "config.json"
    assert json.loads(path.read_text()) == spec
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_build_spec_binds_lxcfs_views_read_only_and_only_over_their_proc_files():
    views = [(Path("/var/lib/lxcfs/proc/meminfo"), "/proc/meminfo")]
    spec = build_spec(_replace(proc_views=views))
    bound = [m for m in spec["mounts"] if m["destination"] == "/proc/meminfo"]
    assert bound == [
        {
            "destination": "/proc/meminfo",
            "type": "bind",
            "source": "/var/lib/lxcfs/proc/meminfo",
            "options": ["bind", "ro", "nosuid", "nodev", "noexec"],
        }
    ]
    # After /proc itself is mounted, so the view lands on top of it.
    dests = [m["destination"] for m in spec["mounts"]]
    assert dests.index("/proc") < dests.index("/proc/meminfo")
    for dest in ("/proc/self/environ", "/proc/sys/kernel/hostname", "/etc/passwd"):
        with pytest.raises(InvalidArgumentError):
            build_spec(_replace(proc_views=[(Path("/var/lib/lxcfs/proc/meminfo"), dest)]))
    with pytest.raises(InvalidArgumentError):
        build_spec(_replace(proc_views=[(Path("relative/meminfo"), "/proc/meminfo")]))


def test_build_spec_binds_lxcfs_cpu_online_over_sysfs_and_nothing_else_in_sys():
    online = "/sys/devices/system/cpu/online"
    spec = build_spec(_replace(proc_views=[(Path("/var/lib/lxcfs" + online), online)]))
    dests = [m["destination"] for m in spec["mounts"]]
    assert dests.index("/sys") < dests.index(online)  # on top of the sandbox's sysfs
    for dest in ("/sys/devices/system/cpu/possible", "/sys/fs/cgroup/memory.max"):
        with pytest.raises(InvalidArgumentError):
            build_spec(_replace(proc_views=[(Path("/var/lib/lxcfs" + online), dest)]))
