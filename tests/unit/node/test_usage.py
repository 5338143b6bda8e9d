"""``node/usage.py``: cgroup v1 and v2 counters from fake /proc and /sys trees."""

from __future__ import annotations

import os
from pathlib import Path

from hutch.node import usage


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _proc(tmp_path: Path, *, mountinfo: str, cgroup: str) -> Path:
    proc = tmp_path / "proc"
    _write(proc / "self" / "mountinfo", mountinfo)
    _write(proc / "42" / "cgroup", cgroup)
    return proc


def test_usage_v1_hybrid_prefers_v1_controllers(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    proc = _proc(
        tmp_path,
        mountinfo=(
            f"32 31 0:29 / {root}/cpu rw,relatime - cgroup cgroup rw,cpu\n"
            f"33 31 0:30 / {root}/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n"
            f"35 31 0:32 / {root}/memory rw,relatime - cgroup cgroup rw,memory\n"
            f"40 31 0:37 / {root}/systemd rw,relatime - cgroup cgroup rw,name=systemd\n"
            f"41 31 0:38 / {root}/unified rw,relatime - cgroup2 cgroup2 rw\n"
        ),
        cgroup="9:name=systemd:/\n4:memory:/node/p/sbx\n2:cpuacct:/p/sbx\n1:cpu:/p/sbx\n0::/\n",
    )
    dirs = usage.cgroup_dirs(42, proc=proc)
    assert dirs["memory"] == root / "memory" / "node/p/sbx"
    assert dirs["cpu"] == root / "cpu" / "p/sbx"
    assert dirs["unified"] == root / "unified"
    _write(dirs["cpuacct"] / "cpuacct.usage", "2500000000\n")
    _write(dirs["cpu"] / "cpu.cfs_quota_us", "50000\n")
    _write(dirs["cpu"] / "cpu.cfs_period_us", "100000\n")
    _write(dirs["memory"] / "memory.usage_in_bytes", "10485760\n")
    _write(dirs["memory"] / "memory.limit_in_bytes", "536870912\n")
    _write(
        dirs["memory"] / "memory.stat", "cache 99\ntotal_cache 4096\ntotal_inactive_file 1048576\n"
    )
    got = usage.read_cgroup_usage(dirs)
    assert got == usage.CgroupUsage(
        cpu_time_ns=2_500_000_000, cpu_limit=0.5, mem_used=9 * 2**20,
        mem_limit=512 * 2**20, mem_cache=4096,
    )  # fmt: skip


def test_usage_v1_unlimited(tmp_path: Path) -> None:
    dirs = {"cpuacct": tmp_path / "a", "cpu": tmp_path / "c", "memory": tmp_path / "m"}
    _write(dirs["cpuacct"] / "cpuacct.usage", "1")
    _write(dirs["cpu"] / "cpu.cfs_quota_us", "-1")
    _write(dirs["cpu"] / "cpu.cfs_period_us", "100000")
    _write(dirs["memory"] / "memory.usage_in_bytes", "5")
    _write(dirs["memory"] / "memory.limit_in_bytes", str(9223372036854771712))
    _write(dirs["memory"] / "memory.stat", "total_inactive_file 10\n")
    got = usage.read_cgroup_usage(dirs)
    assert (got.cpu_limit, got.mem_limit, got.mem_used) == (None, None, 0)


def test_usage_v2(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    proc = _proc(
        tmp_path,
        mountinfo=f"30 23 0:26 / {root} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
        cgroup="0::/hutch/sbx\n",
    )
    dirs = usage.cgroup_dirs(42, proc=proc)
    assert dirs == {"unified": root / "hutch/sbx"}
    d = dirs["unified"]
    _write(d / "cpu.stat", "usage_usec 1500\nuser_usec 1000\n")
    _write(d / "cpu.max", "200000 100000\n")
    _write(d / "memory.current", "3000\n")
    _write(d / "memory.max", "max\n")
    _write(d / "memory.stat", "anon 1\nfile 700\ninactive_file 1000\n")
    got = usage.read_cgroup_usage(dirs)
    assert got == usage.CgroupUsage(
        cpu_time_ns=1_500_000, cpu_limit=2.0, mem_used=2000, mem_limit=None, mem_cache=700
    )


def test_disk_usage_counts_blocks_and_hard_links_once(tmp_path: Path) -> None:
    assert usage.disk_usage(tmp_path / "missing") == 0
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_bytes(b"x" * 100_000)
    os.link(tmp_path / "d" / "a", tmp_path / "d" / "b")
    os.symlink("/etc", tmp_path / "d" / "l")
    one = usage.disk_usage(tmp_path / "d")
    assert 100_000 <= one < 200_000
    assert usage.free_bytes(tmp_path) > 0


def test_process_age_of_this_process() -> None:
    age = usage.process_age(os.getpid())
    assert 0 <= age < 24 * 3600
