"""Small adapters for the sandbox domain's own ports: overlay rootfs, envd client, usage.

``OverlayRootfs`` wraps ``rootfs.py``'s mount calls; ``HttpEnvdClient`` speaks envd's HTTP
API with httpx (the node may use httpx; envd itself may not); ``HostUsageProbe`` reads a
sandbox's cgroup and upper directory (``usage.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from hutch.node import disk, rootfs, usage
from hutch.node.sandbox.models import RunningSandbox
from hutch.node.sandbox.ports import SandboxUsage
from hutch.shared.errors import HutchError


class OverlayRootfs:
    """Satisfies ``RootfsLayer``: one overlayfs mount per sandbox (``rootfs.py``) whose
    upper layer is on the sandbox's own loop-mounted ext4 disk (``disk.py``, ADR 0023)."""

    def prepare(self, sandbox_dir: Path, *, disk_mb: int) -> Path:
        """Make and mount the sandbox's disk of ``disk_mb`` MiB; return its upper dir."""
        disk.create_disk(sandbox_dir, size_mb=disk_mb)
        upper = rootfs.upper_dir(sandbox_dir)
        upper.mkdir(mode=0o755)
        return upper

    def reattach(self, sandbox_dir: Path) -> bool:
        """Mount a kept disk again if it is not (after a host restart); False: no disk."""
        if not disk.has_disk(sandbox_dir):
            return False
        disk.attach_disk(sandbox_dir)
        return True

    def upper(self, sandbox_dir: Path) -> Path:
        """The sandbox's upper directory."""
        return rootfs.upper_dir(sandbox_dir)

    def mount(self, sandbox_dir: Path, *, lower: Path | Sequence[Path]) -> Path:
        """Mount ``<sandbox_dir>/rootfs`` over ``lower`` (a list: top-most first)."""
        return rootfs.mount_rootfs(sandbox_dir, lower=[lower] if isinstance(lower, Path) else lower)

    def remove(self, sandbox_dir: Path) -> None:
        """Unmount and delete rootfs, the disk (upper and work with it) and its image."""
        rootfs.unmount_rootfs(sandbox_dir)
        disk.remove_disk(sandbox_dir)
        rootfs.remove_rootfs(sandbox_dir)

    def mounted_under(self, directory: Path) -> list[Path]:
        """Mount points at or below ``directory``, deepest first."""
        return rootfs.find_mounts_under(directory)


class HostUsageProbe:
    """Satisfies ``UsageProbe``: cgroup counters of PID 1's cgroups, bytes of the upper dir.

    A sandbox with its own disk (ADR 0023) reports that filesystem's ``statfs``: used and
    total as its ``df /`` shows them. One without (made before disks existed) reports
    what its upper directory holds and, as total, that plus what the node's filesystem
    has free (ADR 0010).
    """

    def read(self, sandbox: RunningSandbox, *, with_disk: bool) -> SandboxUsage:
        """See ``UsageProbe.read``. A sandbox paused without its memory has no container:
        no CPU or memory is in use, only its kept upper directory on disk."""
        if sandbox.paused == "filesystem":
            used, total = _disk(sandbox)
            return SandboxUsage(
                cpu_time_ns=0, cpu_limit=None, mem_used=0, mem_limit=None, mem_cache=0,
                disk_used=used, disk_total=total, age_s=None,
            )  # fmt: skip
        dirs = usage.cgroup_dirs(sandbox.pid)
        # The recorded pid may be gone and reused by another process: its cgroups must be
        # the sandbox's own (``<cgroup_parent>/<host_id>``), or nothing is read.
        if not any(d.name == sandbox.host_id for d in dirs.values()):
            raise FileNotFoundError(f"pid {sandbox.pid} is not in sandbox {sandbox.host_id}")
        cg = usage.read_cgroup_usage(dirs)
        disk_used = disk_total = None
        if with_disk:
            disk_used, disk_total = _disk(sandbox)
        return SandboxUsage(
            cpu_time_ns=cg.cpu_time_ns, cpu_limit=cg.cpu_limit, mem_used=cg.mem_used,
            mem_limit=cg.mem_limit, mem_cache=cg.mem_cache, disk_used=disk_used,
            disk_total=disk_total, age_s=usage.process_age(sandbox.pid),
        )  # fmt: skip


def _disk(sandbox: RunningSandbox) -> tuple[int, int]:
    layer = disk.layer_dir(sandbox.sandbox_dir)
    if rootfs.is_mounted(layer):
        return usage.fs_usage(layer)
    used = usage.disk_usage(rootfs.upper_dir(sandbox.sandbox_dir))
    return used, used + usage.free_bytes(sandbox.sandbox_dir)


class EnvdInitError(HutchError):
    """envd refused ``/init`` (its status and body are in the message)."""


class HttpEnvdClient:
    """Satisfies ``EnvdClient`` over one pooled ``httpx.AsyncClient``.

    ``trust_env=False``: an operator's ``HTTP_PROXY`` must never route node-to-sandbox
    traffic through a proxy that cannot reach the sandbox bridge.
    """

    def __init__(self, *, timeout_s: float = 5.0, probe_timeout_s: float = 1.0) -> None:
        self._client = httpx.AsyncClient(timeout=timeout_s, trust_env=False)
        self._probe_timeout = probe_timeout_s

    async def healthy(self, envd_url: str) -> bool:
        """``GET /health`` answered 204."""
        try:
            resp = await self._client.get(envd_url + "/health", timeout=self._probe_timeout)
        except httpx.HTTPError:
            return False
        return resp.status_code == 204

    async def init(self, envd_url: str, body: Mapping[str, object]) -> None:
        """``POST /init``; raise :class:`EnvdInitError` unless it answers 204."""
        try:
            resp = await self._client.post(envd_url + "/init", json=dict(body))
        except httpx.HTTPError as exc:
            raise EnvdInitError(f"POST {envd_url}/init failed: {exc!r}") from exc
        if resp.status_code != 204:
            raise EnvdInitError(f"POST {envd_url}/init: {resp.status_code} {resp.text[:500]}")

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()
