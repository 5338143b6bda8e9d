"""The Protocols the sandbox domain depends on; adapters satisfy them structurally.

``Runtime`` (``node/runtime/base.py``) and ``SandboxNetworks`` (``node/network/base.py``)
are the existing seams; the ones below are this package's own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from hutch.node.network.base import AttachedNetwork, SandboxNetworks
from hutch.node.sandbox.models import RunningSandbox
from hutch.node.templates.artifact import TemplateArtifact


class NodeNetworks(SandboxNetworks, Protocol):
    """Sandbox networks plus the restart path: find what exists and reserve its addresses."""

    async def recover(self) -> list[AttachedNetwork]:
        """Every attached sandbox network; their addresses are marked used."""
        ...


class TemplateStore(Protocol):
    """Published templates on this node."""

    async def get(self, name: str) -> TemplateArtifact:
        """The artifact; raise ``TemplateNotFoundError`` if it is not built."""
        ...


class RootfsLayer(Protocol):
    """A sandbox's writable root over a template's read-only tree, on a disk of its own."""

    def prepare(self, sandbox_dir: Path, *, disk_mb: int) -> Path:
        """Make the sandbox's disk of ``disk_mb`` MiB (its hard limit); return the empty
        upper directory on it. Blocking (mkfs): called in a worker thread."""
        ...

    def reattach(self, sandbox_dir: Path) -> bool:
        """Make sure a kept disk is mounted (after a host restart); False if it has none."""
        ...

    def upper(self, sandbox_dir: Path) -> Path:
        """The sandbox's upper directory (everything it wrote)."""
        ...

    def mount(self, sandbox_dir: Path, *, lower: Path | Sequence[Path]) -> Path:
        """Mount ``<sandbox_dir>/rootfs`` over ``lower`` (upper: :meth:`upper`); return it."""
        ...

    def remove(self, sandbox_dir: Path) -> None:
        """Unmount and delete rootfs, upper, work and the disk; a no-op for what is not
        there."""
        ...

    def mounted_under(self, directory: Path) -> list[Path]:
        """Mount points at or below ``directory``, deepest first."""
        ...


class EnvdClient(Protocol):
    """The two envd calls a node makes: readiness and personalisation."""

    async def healthy(self, envd_url: str) -> bool:
        """Whether ``GET /health`` answers 204 now (False on any connection error)."""
        ...

    async def init(self, envd_url: str, body: Mapping[str, object]) -> None:
        """``POST /init`` with ``body``; raise ``HutchError`` if envd refuses it."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxUsage:
    """One raw reading of what a sandbox uses (``node/usage.py`` reads it from the host).

    ``cpu_time_ns`` is cumulative; limits are ``None`` when the cgroup sets none. ``disk_*``
    are ``None`` when the reading skipped the (slower) walk of the upper directory.
    """

    cpu_time_ns: int
    cpu_limit: float | None
    mem_used: int
    mem_limit: int | None
    mem_cache: int
    disk_used: int | None = None
    disk_total: int | None = None
    #: Seconds since the sandbox's PID 1 started (a pooled sandbox booted before its
    #: create); None when unknown.
    age_s: float | None = None


class UsageProbe(Protocol):
    """Reads a running sandbox's usage. Blocking (file reads): called in a worker thread."""

    def read(self, sandbox: RunningSandbox, *, with_disk: bool) -> SandboxUsage:
        """The sandbox's counters now; raise ``OSError`` if it is gone."""
        ...
