"""What a runc sandbox sees of its own limits: LXCFS's /proc files bound over the kernel's.

One ``lxcfs`` serves the whole host (Debian's ``lxcfs`` package; install.sh installs it):
at ``/var/lib/lxcfs`` by default, where Debian's own service mounts it on a systemd host.
The node uses a running one and starts one when there is none (detached, so it outlives
the node, as a host service does). LXCFS answers each read from the reader's cgroups, so
``/proc/meminfo`` (``free``), ``/proc/cpuinfo`` and ``/proc/stat`` (``--enable-cfs``: the
CPU quota as CPUs), ``/proc/uptime``, ``/proc/loadavg``, ``/proc/diskstats`` and
``/proc/swaps`` in a sandbox describe the sandbox. runc allows exactly these files as
mount destinations inside ``/proc`` (its own allow list, made for LXCFS). LXCFS's
``/sys/devices/system/cpu/online`` (the quota's CPUs, ``0`` for one) is bound too: glibc's
``sysconf(_SC_NPROCESSORS_ONLN)`` reads it, so Python's ``os.cpu_count()``, ``getconf`` and
what is built on them count the sandbox's vCPUs. ``nproc`` and others that count the
affinity mask see the host's CPUs: no cpuset is set (ADR 0031).

If lxcfs dies, reads of the bound files in running sandboxes fail at once with ENOTCONN
(FUSE's "transport endpoint is not connected"); they never hang. The node never reads
them itself except for :func:`views`, a ``stat`` that runs in a worker thread under a
timeout, so a hung lxcfs makes new sandboxes see the host's values, never a stuck node.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Final

log = logging.getLogger("hutch.node.lxcfs")

#: The ``/proc`` files LXCFS virtualises that runc lets a bundle mount over.
PROC_FILES: Final = ("cpuinfo", "meminfo", "stat", "uptime", "loadavg", "diskstats", "swaps")
#: The ``/sys`` files it virtualises that the bundle binds (skipped by an lxcfs without them).
SYS_FILES: Final = ("devices/system/cpu/online",)
#: Destinations :mod:`hutch.node.bundle` accepts for these views (nothing else in /proc, /sys).
DESTINATIONS: Final = frozenset(
    [f"/proc/{name}" for name in PROC_FILES] + [f"/sys/{name}" for name in SYS_FILES]
)
_START_WAIT_S: Final = 5.0


def is_mounted(mount: Path) -> bool:
    """Whether a ``fuse.lxcfs`` filesystem is mounted at ``mount``."""
    target = str(Path(mount).absolute())
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                fields = line.split(" ")
                fstype = line.split(" - ", 1)[1].split(" ", 1)[0] if " - " in line else ""
                if fields[4] == target and fstype.startswith("fuse.lxcfs"):
                    return True
    except OSError:
        return False
    return False


def views(mount: Path) -> list[tuple[Path, str]]:
    """``(host file, destination)`` of each view the mounted lxcfs answers now (blocking:
    a ``stat`` of each, which a hung lxcfs would hold; callers run it under a timeout)."""
    if not is_mounted(mount):
        return []
    found = []
    for name in PROC_FILES:
        source = Path(mount) / "proc" / name
        try:
            os.stat(source)
        except OSError:  # ENOTCONN: lxcfs died; its mount stays until unmounted
            return []
        found.append((source, f"/proc/{name}"))
    for name in SYS_FILES:
        source = Path(mount) / "sys" / name
        try:
            os.stat(source)
        except FileNotFoundError:  # an lxcfs before 4.0: the /proc views only
            continue
        except OSError:
            return []
        found.append((source, f"/sys/{name}"))
    return found


def ensure_running(mount: Path, *, binary: str = "lxcfs", pidfile: Path) -> bool:
    """Make sure an lxcfs serves ``mount``: use a running one, or start one. False when
    lxcfs is not installed or does not come up (sandboxes then see the host's values)."""
    mount = Path(mount)
    if is_mounted(mount):
        if views(mount):
            return True
        # A dead lxcfs leaves its mount behind (ENOTCONN): detach it and start again.
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)
    mount.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.Popen(
            [binary, "--enable-cfs", "-p", str(pidfile), str(mount)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # a host service: it outlives this node
        )  # fmt: skip
    except FileNotFoundError:
        log.warning("lxcfs is not installed (apt-get install lxcfs): sandboxes see the "
                    "host's memory and CPUs in /proc")  # fmt: skip
        return False
    deadline = time.monotonic() + _START_WAIT_S
    while time.monotonic() < deadline:
        if views(mount):
            log.info("lxcfs started at %s", mount)
            return True
        time.sleep(0.05)
    log.warning("lxcfs did not come up at %s: sandboxes see the host's values", mount)
    return False
