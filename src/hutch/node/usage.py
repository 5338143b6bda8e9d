"""What a running sandbox uses, read from the host: its cgroup's counters and its upper dir.

The host-facing half of the metrics sampler (``sandbox/sampler.py``, ADR 0010). The
sandbox's cgroups are found from its PID 1's ``/proc/<pid>/cgroup`` (so runc's relative
``cgroupsPath`` and runsc's own placement need no knowledge of the parent), mapped to mount
points through ``/proc/self/mountinfo``. cgroup v1 controllers are preferred where they are
mounted (this host's "hybrid" layout has a cgroup2 tree that holds no controllers); v2
files are read otherwise.

| value | cgroup v1 | cgroup v2 |
|---|---|---|
| cpu time | ``cpuacct.usage`` (ns) | ``cpu.stat`` ``usage_usec`` |
| cpu limit | ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` | ``cpu.max`` |
| memory used | ``memory.usage_in_bytes`` - ``total_inactive_file`` | ``memory.current`` -   |
|             |                                                       | ``inactive_file``      |
| memory limit | ``memory.limit_in_bytes`` | ``memory.max`` |
| page cache | ``memory.stat`` ``total_cache`` | ``memory.stat`` ``file`` |

"memory used" leaves out inactive page cache, as ``docker stats`` does: that part is
reclaimed before the limit is hit, so counting it would make an idle sandbox that once read
a large file look full.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")
#: A v1 "no limit" value (PAGE_COUNTER_MAX rounded to pages) is far above any real machine.
_V1_NO_LIMIT = 1 << 60


@dataclass(frozen=True, slots=True, kw_only=True)
class CgroupUsage:
    """One reading of a sandbox's cgroup counters (bytes, nanoseconds, CPUs)."""

    cpu_time_ns: int
    #: The CPU quota in CPUs (``quota / period``); None when unlimited.
    cpu_limit: float | None
    mem_used: int
    #: The memory limit in bytes; None when unlimited.
    mem_limit: int | None
    mem_cache: int


def cgroup_dirs(pid: int, *, proc: Path = _PROC) -> dict[str, Path]:
    """Controller name (``"unified"`` for cgroup v2) → directory of ``pid``'s cgroup.

    Raises ``OSError`` when the process is gone.
    """
    mounts = _cgroup_mounts(proc / "self" / "mountinfo")
    dirs: dict[str, Path] = {}
    for line in (proc / str(pid) / "cgroup").read_text().splitlines():
        hierarchy, controllers, path = line.split(":", 2)
        names = ["unified"] if hierarchy == "0" and not controllers else controllers.split(",")
        for name in names:
            mount = mounts.get(name)
            if mount is None:
                continue
            root, point = mount
            rel = os.path.relpath(path, root) if path.startswith(root) else path.lstrip("/")
            dirs[name] = point / rel if rel != "." else point
    return dirs


def _cgroup_mounts(mountinfo: Path) -> dict[str, tuple[str, Path]]:
    """Controller → (root of the hierarchy this mount shows, mount point)."""
    found: dict[str, tuple[str, Path]] = {}
    for line in mountinfo.read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(fields) < 5 or len(rfields) < 3:
            continue
        root, point, fstype = fields[3], Path(_unescape(fields[4])), rfields[0]
        if fstype == "cgroup2":
            found.setdefault("unified", (root, point))
        elif fstype == "cgroup":
            for opt in rfields[2].split(","):
                if opt not in {"rw", "ro"} and "=" not in opt:
                    found.setdefault(opt, (root, point))
    return found


def _unescape(path: str) -> str:
    return path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")


def read_cgroup_usage(dirs: dict[str, Path]) -> CgroupUsage:
    """Read the counters from the directories :func:`cgroup_dirs` found.

    Raises ``OSError`` when the cgroup is gone (the sandbox was killed meanwhile).
    """
    unified = dirs.get("unified")
    if "cpuacct" in dirs:
        cpu_ns = int(_read(dirs["cpuacct"] / "cpuacct.usage"))
    elif unified is not None:
        cpu_ns = _stat(unified / "cpu.stat")["usage_usec"] * 1000
    else:
        raise FileNotFoundError("no cpu accounting cgroup")

    cpu_limit: float | None = None
    if "cpu" in dirs:
        quota = int(_read(dirs["cpu"] / "cpu.cfs_quota_us"))
        period = int(_read(dirs["cpu"] / "cpu.cfs_period_us"))
        cpu_limit = quota / period if quota > 0 and period > 0 else None
    elif unified is not None and (unified / "cpu.max").exists():
        quota_s, _, period_s = _read(unified / "cpu.max").partition(" ")
        if quota_s != "max":
            cpu_limit = int(quota_s) / int(period_s)

    if "memory" in dirs:
        mem = dirs["memory"]
        stat = _stat(mem / "memory.stat")
        usage = int(_read(mem / "memory.usage_in_bytes"))
        limit: int | None = int(_read(mem / "memory.limit_in_bytes"))
        inactive = stat.get("total_inactive_file", stat.get("inactive_file", 0))
        cache = stat.get("total_cache", stat.get("cache", 0))
        if limit is not None and limit >= _V1_NO_LIMIT:
            limit = None
    elif unified is not None:
        stat = _stat(unified / "memory.stat")
        usage = int(_read(unified / "memory.current"))
        raw = _read(unified / "memory.max")
        limit = None if raw == "max" else int(raw)
        inactive, cache = stat.get("inactive_file", 0), stat.get("file", 0)
    else:
        raise FileNotFoundError("no memory cgroup")
    return CgroupUsage(
        cpu_time_ns=cpu_ns,
        cpu_limit=cpu_limit,
        mem_used=max(0, usage - inactive),
        mem_limit=limit,
        mem_cache=cache,
    )


def _read(path: Path) -> str:
    return path.read_text().strip()


def _stat(path: Path) -> dict[str, int]:
    out = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out


def disk_usage(root: Path) -> int:
    """Bytes allocated below ``root`` (like ``du -s``: blocks, one filesystem, hard links once).

    A file removed while walking is skipped; a missing ``root`` uses 0 bytes.
    """
    total = 0
    seen: set[tuple[int, int]] = set()
    try:
        top = root.lstat()
    except FileNotFoundError:
        return 0
    device = top.st_dev
    total += top.st_blocks * 512
    stack = [str(root)]
    while stack:
        current = stack.pop()
        try:
            entries = os.scandir(current)
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if st.st_dev != device:
                    continue
                if st.st_nlink > 1:
                    key = (st.st_dev, st.st_ino)
                    if key in seen:
                        continue
                    seen.add(key)
                total += st.st_blocks * 512
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
    return total


def fs_usage(path: Path) -> tuple[int, int]:
    """``(used, total)`` bytes of ``path``'s filesystem, as ``df`` counts them."""
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize, st.f_blocks * st.f_frsize


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still allocate on ``path``'s filesystem."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def process_age(pid: int, *, proc: Path = _PROC) -> float:
    """Seconds since ``pid`` started (``/proc/<pid>/stat`` field 22 against CLOCK_BOOTTIME)."""
    fields = (proc / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
    return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)
