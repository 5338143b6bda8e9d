"""Build a sandbox's OCI runtime spec (``config.json``) from a :class:`SandboxSpec`.

Pure: :func:`build_spec` only computes a dict; :func:`write_bundle` is the one function that
touches the disk. The spec follows runc's own default (``runc spec``) for mounts, masked and
read-only paths, adds Docker's default capability set and hutch's seccomp profile, and keeps
``noNewPrivileges`` off because E2B templates rely on a setuid ``sudo``. The reasons for each
choice are in ``docs/runtime.md``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from hutch.node.cpu_weight import shares_of
from hutch.node.lxcfs import DESTINATIONS as LXCFS_DESTINATIONS
from hutch.node.seccomp import default_profile
from hutch.shared.errors import InvalidArgumentError

#: A sandbox id doubles as the hostname and the runc container id: an RFC 1123 label.
_SANDBOX_ID_RE: Final = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")

DEFAULT_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CPU_PERIOD_US: Final = 100_000

#: Docker's default capability set (moby's ``oci/caps/defaults.go``): enough for ``sudo``,
#: package managers and ``ping``; nothing that administers the host (no SYS_ADMIN,
#: NET_ADMIN, SYS_PTRACE, SYS_MODULE...).
DEFAULT_CAPABILITIES: Final = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)

#: runc's default masked paths, plus Docker's powercap (power side channel, CVE-2020-8694).
MASKED_PATHS: Final = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)

READONLY_PATHS: Final = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)


@dataclass(frozen=True, slots=True)
class BindMount:
    """A host path bind-mounted into the sandbox (volumes, envd's bundle, /etc/resolv.conf)."""

    source: Path
    destination: str
    read_only: bool = False


@dataclass(frozen=True, slots=True)
class SandboxSpec:
    """Everything the runtime spec needs to know about one sandbox.

    ``rootfs`` is the (already mounted) root filesystem; ``netns_path`` a prepared network
    namespace (``None``: a fresh one holding only loopback). ``cpu_count`` may be fractional.
    ``pids_limit`` counts every task in the sandbox, including the runtime's own helper
    threads during ``exec``, so give it headroom.
    """

    sandbox_id: str
    rootfs: Path
    args: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    additional_gids: Sequence[int] = ()
    cpu_count: float = 1.0
    memory_mb: int = 512
    pids_limit: int = 1024
    netns_path: Path | None = None
    bind_mounts: Sequence[BindMount] = ()
    #: ``(host file, /proc file)``: LXCFS's views of the sandbox's own limits, bound
    #: read-only over the kernel's (``node/lxcfs.py``); only its destinations are allowed.
    proc_views: Sequence[tuple[Path, str]] = ()
    readonly_rootfs: bool = False
    nofile: int = 65536
    #: The cgroup CPU weight (v2 scale 1..10000, the kernel's default 100; None: leave
    #: the default), written as the OCI ``cpu.shares`` (``cpu_weight.shares_of``).
    cpu_weight: int | None = None


def validate_sandbox_id(sandbox_id: str) -> str:
    """Return ``sandbox_id`` if it is usable as hostname and container id, else raise."""
    if not _SANDBOX_ID_RE.match(sandbox_id):
        raise InvalidArgumentError(
            f"invalid sandbox id {sandbox_id!r}: want 1-63 of [a-z0-9-], "
            "not starting or ending with '-'"
        )
    return sandbox_id


def build_spec(
    spec: SandboxSpec,
    *,
    cgroup_parent: str = "/hutch",
    seccomp: Mapping[str, Any] | None = None,
    use_seccomp: bool = True,
    max_nofile: int | None = None,
) -> dict[str, Any]:
    """The OCI runtime spec for ``spec`` as a JSON-ready dict.

    ``cgroup_parent`` is absolute (from each hierarchy's root) or relative (below the
    runtime's own cgroup, as runc resolves it); the sandbox's cgroup is
    ``<cgroup_parent>/<sandbox_id>``. ``seccomp`` replaces hutch's default profile;
    ``use_seccomp=False`` leaves seccomp off (for comparisons in tests, never for users).
    ``max_nofile`` caps ``spec.nofile``: without CAP_SYS_RESOURCE the runtime cannot raise
    a hard limit above its own, and container init fails with a bare EPERM; a node passes
    its own hard ``RLIMIT_NOFILE`` in that case.
    """
    _validate(spec)
    if not cgroup_parent or ".." in cgroup_parent.split("/"):
        raise InvalidArgumentError(f"invalid cgroup parent {cgroup_parent!r}")
    namespaces: list[dict[str, str]] = [
        {"type": "pid"},
        {"type": "mount"},
        {"type": "uts"},
        {"type": "ipc"},
        {"type": "cgroup"},
    ]
    network: dict[str, str] = {"type": "network"}
    if spec.netns_path is not None:
        network["path"] = str(spec.netns_path)
    namespaces.append(network)
    caps = list(DEFAULT_CAPABILITIES)
    nofile = spec.nofile if max_nofile is None else min(spec.nofile, max_nofile)
    linux: dict[str, Any] = {
        "namespaces": namespaces,
        "cgroupsPath": f"{cgroup_parent.rstrip('/')}/{spec.sandbox_id}",
        "resources": _resources(spec),
        "maskedPaths": list(MASKED_PATHS),
        "readonlyPaths": list(READONLY_PATHS),
    }
    if use_seccomp:
        linux["seccomp"] = dict(seccomp) if seccomp is not None else default_profile()
    env = dict(spec.env)
    env.setdefault("PATH", DEFAULT_PATH)
    # No HOSTNAME here: a warm pool member's PID 1 would keep its pool id in it after the
    # UTS hostname became the sandbox id (ADR 0011); shells set HOSTNAME from uname.
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {
                "uid": spec.uid,
                "gid": spec.gid,
                "additionalGids": list(spec.additional_gids),
            },
            "args": list(spec.args),
            "env": [f"{k}={v}" for k, v in env.items()],
            "cwd": spec.cwd,
            # Bounding/effective/permitted only: execve drops the effective set of a non-root
            # user, and an empty inheritable set closes CVE-2022-24769.
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
            # E2B templates have passwordless sudo: setuid binaries must keep working.
            "noNewPrivileges": False,
        },
        "root": {"path": str(spec.rootfs), "readonly": spec.readonly_rootfs},
        "hostname": spec.sandbox_id,
        "mounts": _mounts(spec),
        "linux": linux,
    }


def write_bundle(bundle_dir: Path, spec_dict: Mapping[str, Any]) -> Path:
    """Write ``config.json`` into ``bundle_dir`` atomically; return its path."""
    bundle_dir = Path(bundle_dir)
    target = bundle_dir / "config.json"
    tmp = bundle_dir / ".config.json.tmp"
    data = json.dumps(spec_dict, indent=1).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)
    return target


def _validate(spec: SandboxSpec) -> None:
    validate_sandbox_id(spec.sandbox_id)
    if not spec.args:
        raise InvalidArgumentError("a sandbox needs a command (args is empty)")
    if not spec.cwd.startswith("/"):
        raise InvalidArgumentError(f"cwd must be absolute: {spec.cwd!r}")
    for key, value in spec.env.items():
        if not key or "=" in key or "\0" in key or "\0" in value:
            raise InvalidArgumentError(f"invalid environment variable name {key!r}")
    for n in (spec.uid, spec.gid, *spec.additional_gids):
        # 2**32 - 1 is (uid_t)-1, "no change" to the kernel: never a real id.
        if not 0 <= n < 2**32 - 1:
            raise InvalidArgumentError(f"invalid uid or gid {n}")
    if not 0 < spec.cpu_count <= 1024:
        raise InvalidArgumentError(f"cpu_count must be in (0, 1024]: {spec.cpu_count}")
    if spec.cpu_weight is not None and not 1 <= spec.cpu_weight <= 10000:
        raise InvalidArgumentError(f"cpu_weight must be in [1, 10000]: {spec.cpu_weight}")
    if spec.memory_mb < 8:
        raise InvalidArgumentError(f"memory_mb must be at least 8: {spec.memory_mb}")
    if spec.pids_limit < 16:
        raise InvalidArgumentError(f"pids_limit must be at least 16: {spec.pids_limit}")
    if spec.nofile < 64:
        raise InvalidArgumentError(f"nofile must be at least 64: {spec.nofile}")
    for mount in spec.bind_mounts:
        _validate_destination(mount.destination)
        if not Path(mount.source).is_absolute():
            raise InvalidArgumentError(f"bind mount source must be absolute: {mount.source}")
    for source, dest in spec.proc_views:
        if dest not in LXCFS_DESTINATIONS or not Path(source).is_absolute():
            raise InvalidArgumentError(f"not a /proc view runc allows: {source} -> {dest}")


def _validate_destination(dest: str) -> None:
    parts = dest.split("/")
    if not dest.startswith("/") or ".." in parts or "\0" in dest or dest.rstrip("/") == "":
        raise InvalidArgumentError(f"invalid mount destination {dest!r}")
    # The runtime's own mounts are not for a caller to shadow.
    for reserved in ("/proc", "/sys", "/dev"):
        if dest == reserved or dest.startswith(reserved + "/"):
            raise InvalidArgumentError(f"mount destination {dest!r} is reserved")


def _resources(spec: SandboxSpec) -> dict[str, Any]:
    memory = spec.memory_mb * 1024 * 1024
    cpu: dict[str, int] = {"quota": round(spec.cpu_count * CPU_PERIOD_US), "period": CPU_PERIOD_US}
    if spec.cpu_weight is not None:
        cpu["shares"] = shares_of(spec.cpu_weight)
    return {
        # Deny every device; runc then allows exactly its default set (null, zero, full,
        # random, urandom, tty, ptmx and pts) and creates only those nodes in /dev.
        "devices": [{"allow": False, "access": "rwm"}],
        # swap == limit: no swap on top of memory, so the limit is what a user gets.
        "memory": {"limit": memory, "swap": memory},
        "cpu": cpu,
        "pids": {"limit": spec.pids_limit},
    }


def _mounts(spec: SandboxSpec) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"],
        },
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
        },
    ]
    for source, dest in spec.proc_views:
        mounts.append(
            {
                "destination": dest,
                "type": "bind",
                "source": str(source),
                "options": ["bind", "ro", "nosuid", "nodev", "noexec"],
            }
        )
    for bind in spec.bind_mounts:
        options = ["rbind", "rprivate", "nosuid", "nodev"]
        if bind.read_only:
            options.append("ro")
        mounts.append(
            {
                "destination": bind.destination,
                "type": "bind",
                "source": str(bind.source),
                "options": options,
            }
        )
    return mounts
