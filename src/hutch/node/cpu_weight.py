"""A sandbox's cgroup CPU weight: how its CPU time weighs against its siblings' when the
node's cores are all busy (ADR 0038). The quota (``cpu.max``/``cpu.cfs_quota_us``) caps a
sandbox; the weight only matters under contention, so a low weight costs a sandbox
nothing on an idle node.

Weights are on cgroup v2's scale (``cpu.weight``, 1..10000, the kernel's default 100).
cgroup v1 has ``cpu.shares`` (2..262144, default 1024): a weight ``w`` is written there as
``w * 1024 / 100``. The OCI spec takes shares; runc turns them into a v2 weight with its
own formula (1024 shares -> 39, not 100), so raising a sandbox back to normal writes the
cgroup file itself, on both versions.

A low-weight pool member's cgroup is a sibling of the live sandboxes' (all below the
node's cgroup parent), so while cores are short its envd's start yields to them.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Mapping
from pathlib import Path

from hutch.node import usage

#: The kernel's default weight (v2 ``cpu.weight``; v1 ``cpu.shares`` 1024).
NORMAL = 100
#: The nice value of the node's own helper processes (``runc create``, ``ip``) started
#: for background work (a pool refill), so they yield to those of live creates too.
BACKGROUND_NICE = 10

#: Set in the warm pool's refill task: processes it starts are niced (``lower_if_background``).
BACKGROUND: contextvars.ContextVar[bool] = contextvars.ContextVar("hutch_background", default=False)


def shares_of(weight: int) -> int:
    """cgroup v1 ``cpu.shares`` for a v2 ``weight`` (at least 2, the kernel's least)."""
    return max(2, round(weight * 1024 / 100))


def weight_of_shares(shares: int) -> int:
    """The v2 weight a v1 ``cpu.shares`` value stands for (inverse of ``shares_of``)."""
    return max(1, round(shares * 100 / 1024))


def write_weight(dirs: Mapping[str, Path], weight: int) -> None:
    """Set the weight of the cgroup ``dirs`` name (``usage.cgroup_dirs``): v1's ``cpu``
    controller where mounted, else v2's ``unified``. Raises ``OSError``."""
    cpu = dirs.get("cpu")
    if cpu is not None:
        (cpu / "cpu.shares").write_text(f"{shares_of(weight)}\n")
        return
    unified = dirs.get("unified")
    if unified is None:
        raise FileNotFoundError("no cpu cgroup controller found")
    (unified / "cpu.weight").write_text(f"{weight}\n")


def read_weight(dirs: Mapping[str, Path]) -> int:
    """The weight of the cgroup ``dirs`` name, on v2's scale. Raises ``OSError``."""
    cpu = dirs.get("cpu")
    if cpu is not None:
        return weight_of_shares(int((cpu / "cpu.shares").read_text()))
    unified = dirs.get("unified")
    if unified is None:
        raise FileNotFoundError("no cpu cgroup controller found")
    return int((unified / "cpu.weight").read_text())


def sandbox_dirs(pid: int, host_id: str) -> dict[str, Path]:
    """The cgroup directories of a sandbox's PID 1; ``FileNotFoundError`` unless they are
    the sandbox's own (``<cgroup parent>/<host id>``: a recorded pid may have been reused)."""
    dirs = usage.cgroup_dirs(pid)
    if not any(d.name == host_id for d in dirs.values()):
        raise FileNotFoundError(f"pid {pid} is not in sandbox {host_id}")
    return dirs


def set_sandbox_weight(pid: int, host_id: str, weight: int) -> None:
    """Set the CPU weight of the sandbox whose PID 1 is ``pid``. Raises ``OSError``.

    Back at ``NORMAL`` (a create took a warm-pool member) its processes also leave the
    refill's ``BACKGROUND_NICE``: tini and envd were started niced (runc's child, or
    forked with PID 1's nice), and what envd starts for the user must not inherit it."""
    dirs = sandbox_dirs(pid, host_id)
    write_weight(dirs, weight)
    if weight >= NORMAL:
        renice_sandbox(dirs, 0)


def renice_sandbox(dirs: Mapping[str, Path], nice: int) -> None:
    """Set the nice value of every process in the cgroup ``dirs`` names; best effort per
    process (one may exit meanwhile). Raises ``OSError`` when no ``cgroup.procs`` is there."""
    files = [d / "cgroup.procs" for d in dirs.values()]
    procs = next((f for f in files if f.is_file()), None)
    if procs is None:
        raise FileNotFoundError("no cgroup.procs for this sandbox")
    for line in procs.read_text().split():
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, int(line), nice)


def lower_if_background(pid: int) -> None:
    """Renice a just-started helper process when the caller does background work
    (``BACKGROUND``); best effort (it may have exited already)."""
    if BACKGROUND.get():
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, pid, BACKGROUND_NICE)
