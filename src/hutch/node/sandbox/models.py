"""The sandbox domain's values: what a create asks for, what a running sandbox is."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from hutch.node.templates.artifact import TemplateArtifact
from hutch.shared.egress import DEFAULT_POLICY, EgressPolicy, policy_from_json
from hutch.shared.errors import NotFoundError


class SandboxNotFoundError(NotFoundError):
    """This node has no sandbox of that id (404)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxRequest:
    """One sandbox to create. ``None`` resources fall back to the template's defaults.

    ``env_vars`` and ``access_token`` reach envd through ``/init`` only (never the OCI
    spec), so a sandbox prepared ahead of demand can be personalised later.
    """

    sandbox_id: str
    template: str
    env_vars: Mapping[str, str] = field(default_factory=dict)
    access_token: str | None = None
    cpu_count: float | None = None
    memory_mb: int | None = None
    #: The hard limit of its writable layer (ADR 0023); None: the template's, else the
    #: node's default. Above the node's ``max_disk_mb``: ``InvalidArgumentError``.
    disk_mb: int | None = None
    allow_internet: bool = True
    #: The egress policy (``network.allowOut``/``denyOut``); ``None``: all, or nothing
    #: without ``allow_internet``.
    egress: EgressPolicy | None = None
    #: The control plane's metadata of the sandbox: the node keeps the live copy (ADR 0005).
    metadata: Mapping[str, str] = field(default_factory=dict)
    #: ``(host directory, path in the sandbox)``: volumes, bind-mounted read-write
    #: (``nosuid,nodev``); they leave with the sandbox's mount namespace.
    volume_mounts: Sequence[tuple[Path, str]] = ()
    #: Start from this artifact instead of the published template ``template`` names
    #: (template builds: an intermediate step's tree). Never from the warm pool.
    artifact: TemplateArtifact | None = None
    #: Boot with this cgroup CPU weight (cgroup v2's scale, 1..10000; the kernel's default
    #: is 100); None: the default. Warm pool members boot low and are raised when taken
    #: (ADR 0038).
    cpu_weight: int | None = None


def effective_policy(request: SandboxRequest) -> EgressPolicy:
    """The policy a create asks for: its own, else all or (no internet) nothing."""
    if request.egress is not None:
        return request.egress
    return (
        DEFAULT_POLICY
        if request.allow_internet
        else policy_from_json({"allow_out": [], "deny_out": ["0.0.0.0/0"]})
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class RunningSandbox:
    """A sandbox whose envd answered and was initialised.

    ``pid`` is the host pid of its PID 1 (tini); ``started_at`` is wall-clock (epoch s).
    ``host_id`` names its objects on the host (directory, container, cgroup, netns, veth):
    the sandbox id for a cold create, the pool member's own id for a sandbox taken from
    the warm pool (those names cannot change once the container runs; ADR 0011).
    """

    sandbox_id: str
    template: str
    address: IPv4Address
    envd_url: str
    pid: int
    cpu_count: float
    memory_mb: int
    default_user: str
    workdir: str
    started_at: float
    sandbox_dir: Path
    #: The live metadata (``SandboxManager.set_metadata`` replaces it; ADR 0005).
    metadata: Mapping[str, str] = field(default_factory=dict)
    allow_internet: bool = True
    #: The egress policy in force (``set_network`` replaces it; kept across pause).
    egress: EgressPolicy = DEFAULT_POLICY
    #: ``None`` while it runs; ``"full"`` when frozen with its memory, ``"filesystem"``
    #: when its processes are gone and only its files are kept (ADR 0004).
    paused: str | None = None
    host_id: str = ""
    #: ``(host directory, path in the sandbox)`` of its volumes (bound again on a reboot).
    volume_mounts: Sequence[tuple[Path, str]] = ()
    #: Its disk's size in MiB (ADR 0023); 0 for a sandbox made before disks existed.
    disk_mb: int = 0
    #: The host pid of its envd when the node's zygote forked it in (ADR 0032 addendum,
    #: step 2; watched by a pidfd, re-armed by reconcile); 0: envd is PID 1's own child.
    envd_pid: int = 0

    def __post_init__(self) -> None:
        if not self.host_id:
            object.__setattr__(self, "host_id", self.sandbox_id)

    def to_json(self) -> dict[str, Any]:
        """The record kept in ``<sandbox_dir>/sandbox.json`` (re-adopted after a restart)."""
        return {
            "sandbox_id": self.sandbox_id,
            "host_id": self.host_id,
            "template": self.template,
            "address": str(self.address),
            "envd_url": self.envd_url,
            "pid": self.pid,
            "cpu_count": self.cpu_count,
            "memory_mb": self.memory_mb,
            "default_user": self.default_user,
            "workdir": self.workdir,
            "started_at": self.started_at,
            "metadata": dict(self.metadata),
            "allow_internet": self.allow_internet,
            "egress": self.egress.to_json(),
            "paused": self.paused,
            "volume_mounts": [[str(src), dest] for src, dest in self.volume_mounts],
            "disk_mb": self.disk_mb,
            "envd_pid": self.envd_pid,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, sandbox_dir: Path) -> RunningSandbox:
        """Inverse of :meth:`to_json`."""
        return cls(
            sandbox_id=str(data["sandbox_id"]),
            template=str(data["template"]),
            address=IPv4Address(data["address"]),
            envd_url=str(data["envd_url"]),
            pid=int(data["pid"]),
            cpu_count=float(data["cpu_count"]),
            memory_mb=int(data["memory_mb"]),
            default_user=str(data["default_user"]),
            workdir=str(data["workdir"]),
            started_at=float(data["started_at"]),
            sandbox_dir=sandbox_dir,
            metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
            host_id=str(data.get("host_id") or data["sandbox_id"]),
            allow_internet=bool(data.get("allow_internet", True)),
            egress=policy_from_json(data.get("egress")),
            paused=data.get("paused"),
            volume_mounts=tuple(
                (Path(src), str(dest)) for src, dest in data.get("volume_mounts") or ()
            ),
            disk_mb=int(data.get("disk_mb") or 0),
            envd_pid=int(data.get("envd_pid") or 0),
        )

    def dumps(self) -> str:
        """``sandbox.json``'s text."""
        return json.dumps(self.to_json(), indent=1) + "\n"


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconcileReport:
    """What :meth:`SandboxManager.reconcile` found and did.

    ``removed``: present on the host but unknown to the caller; destroyed.
    ``missing``: known to the caller but not running here (leftovers cleaned up).
    ``adopted``: known and running (or paused), taken back under management after a restart.
    """

    removed: Sequence[str] = ()
    missing: Sequence[str] = ()
    adopted: Sequence[str] = ()
    #: The adopted sandboxes that are paused, with their mode (``"full"``/``"filesystem"``).
    paused: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ManagerConfig:
    """The node-level facts a :class:`SandboxManager` needs (built from ``NodeSettings``).

    ``envd_bundle_dir`` and ``tini_path`` are host paths bind-mounted read-only into every
    sandbox. ``max_nofile`` caps the sandbox's RLIMIT_NOFILE at the node's own hard limit.
    """

    sandboxes_dir: Path
    envd_bundle_dir: Path
    tini_path: Path
    cgroup_parent: str = "/hutch"
    max_sandboxes: int = 100
    ready_timeout_s: float = 30.0
    dns_servers: Sequence[str] = ("1.1.1.1", "8.8.8.8")
    pids_limit: int = 1024
    #: A sandbox's disk when neither its create nor its template names one (MiB).
    default_disk_mb: int = 1024
    #: The largest disk a create or a template may ask for (MiB).
    max_disk_mb: int = 10240
    #: Where the host's lxcfs is mounted (``node/lxcfs.py``); None: sandboxes see the
    #: host's /proc values (and always under runsc, which has its own).
    lxcfs_dir: Path | None = None
    max_nofile: int | None = None
    #: Where snapshots are published as templates (``<home>/templates``); None: no snapshots.
    templates_dir: Path | None = None
    #: Warm pool members to keep per template (ADR 0011); templates not named get none.
    pool_sizes: Mapping[str, int] = field(default_factory=dict)
    #: Pause after a pool member failed to boot before the pool tries again.
    pool_retry_s: float = 5.0
    #: A static busybox on the host (``/bin/busybox``), the waiter of sandboxes whose envd
    #: is forked from the zygote (ADR 0039); None: the bundle's interpreter waits instead.
    busybox_path: Path | None = None
    #: How often an idle pool looks at its templates again (built or rebuilt meanwhile).
    pool_recheck_s: float = 5.0
    #: Demand sizing (ADR 0038): the most members demand may ask for per key (0: the
    #: floors above only), the sum of members' memory limits it may fill (MiB), the window
    #: of recent creates it looks at and the span that counts as one burst.
    pool_max_per_template: int = 0
    pool_memory_mb: int = 0
    pool_window_s: float = 120.0
    pool_burst_s: float = 1.0
    #: The cgroup CPU weight members boot with (v2 scale; raised to 100 when taken).
    pool_cpu_weight: int = 1
