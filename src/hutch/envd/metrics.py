"""CPU, memory and disk use of the machine (the sandbox) envd runs in, as ``GET /metrics``.

Inside a sandbox the cgroup's memory limit is the sandbox's memory, so it wins over
``/proc/meminfo`` when it is lower; CPU use is measured between two reads of ``/proc/stat``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass


@dataclass
class _CpuSample:
    busy: int = 0
    total: int = 0


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            raw = f.read().strip()
    except OSError:
        return None
    if raw == "max":
        return None
    try:
        return int(raw)
    except ValueError:
        return None


def _meminfo() -> dict[str, int]:
    result: dict[str, int] = {}
    with open("/proc/meminfo") as f:
        for line in f:
            name, _, rest = line.partition(":")
            parts = rest.split()
            if parts:
                result[name] = int(parts[0]) * 1024
    return result


def _cgroup_memory() -> tuple[int | None, int | None, int | None]:
    """(limit, usage, cache) from cgroup v2 or v1, when envd sits in a limited cgroup."""
    v2 = "/sys/fs/cgroup"
    if os.path.exists(f"{v2}/memory.max"):
        cache = None
        try:
            with open(f"{v2}/memory.stat") as f:
                for line in f:
                    if line.startswith("file "):
                        cache = int(line.split()[1])
        except OSError:
            pass
        return _read_int(f"{v2}/memory.max"), _read_int(f"{v2}/memory.current"), cache
    v1 = "/sys/fs/cgroup/memory"
    cache = None
    try:
        with open(f"{v1}/memory.stat") as f:
            for line in f:
                if line.startswith("total_cache "):
                    cache = int(line.split()[1])
    except OSError:
        pass
    return _read_int(f"{v1}/memory.limit_in_bytes"), _read_int(f"{v1}/memory.usage_in_bytes"), cache


class MetricsReader:
    """Reads metrics; remembers the last CPU sample so usage is a rate between calls."""

    def __init__(self) -> None:
        self._last = self._cpu_sample()

    @staticmethod
    def _cpu_sample() -> _CpuSample:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return _CpuSample(busy=sum(fields) - idle, total=sum(fields))

    def read(self, disk_path: str = "/") -> dict[str, float | int]:
        """The metrics as E2B's envd reports them (field names are the wire's)."""
        now = self._cpu_sample()
        total = now.total - self._last.total
        busy = now.busy - self._last.busy
        self._last = now
        cpu_pct = round(100.0 * busy / total, 2) if total > 0 else 0.0

        info = _meminfo()
        mem_total = info.get("MemTotal", 0)
        mem_used = mem_total - info.get("MemAvailable", info.get("MemFree", 0))
        mem_cache = info.get("Cached", 0)
        limit, usage, cache = _cgroup_memory()
        if limit is not None and 0 < limit < mem_total and usage is not None:
            mem_total, mem_used = limit, usage
            mem_cache = cache if cache is not None else mem_cache
        st = os.statvfs(disk_path)
        disk_total = st.f_blocks * st.f_frsize
        disk_used = (st.f_blocks - st.f_bfree) * st.f_frsize
        return {
            "ts": int(time.time()),
            "cpu_count": os.cpu_count() or 1,
            "cpu_used_pct": cpu_pct,
            "mem_total": mem_total,
            "mem_used": mem_used,
            "mem_cache": mem_cache,
            "mem_total_mib": mem_total // (1024 * 1024),
            "mem_used_mib": mem_used // (1024 * 1024),
            "disk_used": disk_used,
            "disk_total": disk_total,
        }
