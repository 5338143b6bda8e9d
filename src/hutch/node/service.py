"""``NodeService``: everything the node API offers, over the node's own parts.

The one object ``node/http/`` serves (a thin handler per route). It speaks the node's
vocabulary (``SandboxRequest``, ``RunningSandbox``) and adds what the sandbox manager
does not keep itself:

* **volumes**: each ``(volume id, backend, path)`` of a create or a reboot is turned into
  the backend's host mount (once per volume) and handed to the manager as a bind mount;
* **killed sandboxes' logs**: the last lines of a sandbox's envd log are kept when it is
  killed (for ``_KEEP_KILLED`` sandboxes), so that ``/logs`` still answers just after.

Routes (which sandbox is reachable where) are not the node's business: the api tells the
proxy (``api/service/routing.py``) from what create, resume and reconcile return.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from hutch.node import metrics
from hutch.node.sandbox.envd_log import EnvdLogEntry
from hutch.node.sandbox.models import (
    ReconcileReport,
    RunningSandbox,
    SandboxNotFoundError,
    SandboxRequest,
)
from hutch.node.sandbox.sampler import UsageSample
from hutch.node.templates.artifact import TemplateNotFoundError
from hutch.node.templates.manager import TemplateManager
from hutch.node.templates.transfer import Exporter, Fetched, Fetcher
from hutch.shared.egress import EgressPolicy
from hutch.shared.errors import InvalidArgumentError, NotFoundError, UnavailableError
from hutch.volumes.base import VolumeBackend

#: Killed sandboxes whose last log lines are kept, and how much of each log.
_KEEP_KILLED = 256
_KILLED_LOG_BYTES = 64 * 1024


class Sandboxes(Protocol):
    """What the service needs of the node's ``SandboxManager`` (tests hand in a fake)."""

    async def create(self, request: SandboxRequest) -> RunningSandbox: ...
    async def kill(self, sandbox_id: str) -> bool: ...
    async def pause(self, sandbox_id: str, *, keep_memory: bool = True) -> RunningSandbox: ...
    async def resume(
        self,
        sandbox_id: str,
        *,
        keep_memory: bool = True,
        env_vars: Mapping[str, str] | None = None,
        access_token: str | None = None,
    ) -> tuple[RunningSandbox, bool]: ...
    async def snapshot(self, sandbox_id: str, *, name: str) -> object: ...
    def set_metadata(self, sandbox_id: str, metadata: Mapping[str, str]) -> RunningSandbox: ...
    async def set_network(self, sandbox_id: str, policy: EgressPolicy) -> RunningSandbox: ...
    def list(self) -> list[RunningSandbox]: ...
    def pool_members(self) -> list[RunningSandbox]: ...
    def pool_targets(self) -> Mapping[str, int]: ...
    def get(self, sandbox_id: str) -> RunningSandbox: ...
    def envd_log(self, sandbox_id: str, *, max_bytes: int = ...) -> list[EnvdLogEntry]: ...
    async def reconcile(
        self, known_ids: Iterable[str], *, paused_ids: Iterable[str] = ()
    ) -> ReconcileReport: ...


class Samples(Protocol):
    """The usage sampler's read side."""

    def samples(
        self, sandbox_id: str, *, start: float | None = None, end: float | None = None
    ) -> list[UsageSample]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class VolumeMount:
    """A volume to mount read-write at ``path`` in the sandbox."""

    volume_id: str
    backend: str
    path: str


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeIdentity:
    """Who this node is (``GET /v1/node``)."""

    node_id: str
    version: str
    runtime: str
    max_sandboxes: int
    #: Warm pool members wanted per template (ADR 0011).
    pool_sizes: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeLoad:
    """The node's load now (``GET /v1/status``): every sandbox, whoever owns it."""

    running: int
    paused: int
    host_cpu_count: int
    host_memory_mb: int
    allocated_cpu: float
    allocated_memory_mb: int
    #: ``(template, members wanted, members idle)`` per pooled template.
    pool: Sequence[tuple[str, int, int]] = ()


class NodeService:
    """See the module docstring."""

    def __init__(
        self,
        *,
        identity: NodeIdentity,
        sandboxes: Sandboxes,
        sampler: Samples,
        templates: TemplateManager,
        volumes: Mapping[str, VolumeBackend] | None = None,
        exporter: Exporter | None = None,
        fetcher: Fetcher | None = None,
    ) -> None:
        self.identity = identity
        #: Serves this node's artifacts to peers; fetches what it lacks (ADR 0029).
        self.exporter = exporter
        self.fetcher = fetcher
        self.templates = templates
        self._sandboxes = sandboxes
        self._sampler = sampler
        self._volumes = dict(volumes or {})
        self._killed_logs: OrderedDict[str, tuple[EnvdLogEntry, ...]] = OrderedDict()

    def local_volumes(self) -> VolumeBackend:
        """The backend holding this node's local volumes (``/v1/volumes``, ADR 0034)."""
        backend = self._volumes.get("local")
        if backend is None:
            raise UnavailableError(f"node {self.identity.node_id} holds no local volumes")
        return backend

    def sandbox_count(self) -> int:
        """How many sandboxes the node runs (or holds paused)."""
        return len(self._sandboxes.list())

    def load(self) -> NodeLoad:
        """Read-only and cheap (the manager's bookkeeping and ``/proc/meminfo``)."""
        sandboxes = self._sandboxes.list()
        idle = Counter(m.template for m in self._sandboxes.pool_members())
        paused = sum(1 for s in sandboxes if s.paused is not None)
        return NodeLoad(
            running=len(sandboxes) - paused,
            paused=paused,
            host_cpu_count=os.cpu_count() or 1,
            host_memory_mb=_memory_mb(),
            allocated_cpu=sum(s.cpu_count for s in sandboxes),
            allocated_memory_mb=sum(s.memory_mb for s in sandboxes),
            pool=[
                (name, target, idle.get(name, 0))
                for name, target in sorted(self._pool_targets().items())
                if target > 0
            ],
        )

    def _pool_targets(self) -> dict[str, int]:
        """Members wanted per template: the pool's live targets (floors raised by demand,
        ADR 0038); a floor of a template not built here (yet) shows as wanted."""
        return {**self.identity.pool_sizes, **self._sandboxes.pool_targets()}

    async def create(
        self,
        request: SandboxRequest,
        *,
        volumes: Sequence[VolumeMount] = (),
        artifact_sources: Sequence[str] = (),
    ) -> RunningSandbox:
        """Mount the volumes on the host, then start the sandbox with them bound in.

        A template this node lacks is fetched from the first of ``artifact_sources`` that
        serves it, then the create runs again; lacking it and unable to fetch it, the node
        refuses with ``ArtifactUnavailableError`` (the api tries another node).
        """
        binds = await self._volume_binds(volumes)
        if binds:
            request = _with_mounts(request, binds)
        self._killed_logs.pop(request.sandbox_id, None)
        try:
            return await self._sandboxes.create(request)
        except TemplateNotFoundError:
            if self.fetcher is None:
                raise
            if await self.fetcher.ensure(request.template, artifact_sources) is None:
                raise  # it is here: the not-found was about something else
        return await self._sandboxes.create(request)

    async def fetch_artifact(self, name: str, sources: Sequence[str]) -> Fetched | None:
        """Hold template ``name`` (None: held already), fetched from a peer."""
        if self.fetcher is None:
            raise InvalidArgumentError("this node fetches no artifacts")
        return await self.fetcher.ensure(name, sources)

    async def _volume_binds(self, volumes: Sequence[VolumeMount]) -> list[tuple[Path, str]]:
        binds = []
        for mount in volumes:
            backend = self._volumes.get(mount.backend)
            if backend is None or not backend.mountable:
                raise InvalidArgumentError(
                    f"volume {mount.volume_id}: backend {mount.backend!r} cannot be mounted here"
                )
            try:
                host = await backend.host_path(mount.volume_id)
            except NotFoundError as exc:
                # A local volume's image is on the node that created it (ADR 0034), where
                # placement sends every sandbox that mounts it: not here.
                raise UnavailableError(
                    f"volume {mount.volume_id}: its data is not on node {self.identity.node_id}",
                    error_code="volume_node_unavailable",
                ) from exc
            binds.append((Path(host), mount.path))
        return binds

    async def kill(self, sandbox_id: str) -> None:
        """Keep the tail of its log, then destroy it. Idempotent."""
        with contextlib.suppress(SandboxNotFoundError):
            tail = self._sandboxes.envd_log(sandbox_id, max_bytes=_KILLED_LOG_BYTES)
            self._killed_logs[sandbox_id] = tuple(tail)
            while len(self._killed_logs) > _KEEP_KILLED:
                self._killed_logs.popitem(last=False)
        await self._sandboxes.kill(sandbox_id)

    async def pause(self, sandbox_id: str, *, keep_memory: bool) -> bool:
        """Freeze (or stop) the sandbox; True if its memory is kept."""
        sandbox = await self._sandboxes.pause(sandbox_id, keep_memory=keep_memory)
        return sandbox.paused == "full"

    async def resume(
        self,
        sandbox_id: str,
        *,
        keep_memory: bool,
        env_vars: Mapping[str, str],
        access_token: str | None,
        volumes: Sequence[VolumeMount] = (),
    ) -> tuple[RunningSandbox, bool]:
        """Thaw or reboot the sandbox. Its volumes' host mounts are made sure of first: a
        reboot binds them again, and an unmounted mount point would silently be an empty
        directory of the host."""
        await self._volume_binds(volumes)
        return await self._sandboxes.resume(
            sandbox_id, keep_memory=keep_memory, env_vars=dict(env_vars),
            access_token=access_token,
        )  # fmt: skip

    async def snapshot(self, sandbox_id: str, *, snapshot_id: str) -> None:
        """Publish the sandbox's files as template ``snapshot_id``."""
        await self._sandboxes.snapshot(sandbox_id, name=snapshot_id)
        await self.templates.publish(snapshot_id)  # outlives this node (ADR 0029 addendum)

    async def delete_snapshot(self, snapshot_id: str) -> None:
        """Remove snapshot template ``snapshot_id`` (idempotent) and unused layers."""
        await self.templates.delete(snapshot_id)

    def list(self) -> list[RunningSandbox]:
        """Every sandbox the node runs or holds paused, oldest first."""
        return self._sandboxes.list()

    def set_metadata(self, sandbox_id: str, metadata: Mapping[str, str]) -> None:
        """Replace the running sandbox's live metadata (the whole map)."""
        self._sandboxes.set_metadata(sandbox_id, metadata)

    async def set_network(self, sandbox_id: str, policy: EgressPolicy) -> None:
        """Replace the sandbox's egress policy (the whole policy)."""
        await self._sandboxes.set_network(sandbox_id, policy)

    def metrics(
        self, sandbox_id: str, *, start: float | None, end: float | None
    ) -> list[UsageSample]:
        """The sampler's samples of a running sandbox (empty until its first tick)."""
        self._sandboxes.get(sandbox_id)  # SandboxNotFoundError when it is not here
        return self._sampler.samples(sandbox_id, start=start, end=end)

    def logs(self, sandbox_id: str) -> list[EnvdLogEntry]:
        """The envd log of a running sandbox; the kept tail of a killed one."""
        try:
            return self._sandboxes.envd_log(sandbox_id)
        except SandboxNotFoundError:
            return list(self._killed_logs.get(sandbox_id, ()))

    async def reconcile(
        self, known: Iterable[str], *, paused: Iterable[str]
    ) -> tuple[ReconcileReport, list[RunningSandbox]]:
        """Make the host agree with the caller's ids; the report and the adopted sandboxes."""
        report = await self._sandboxes.reconcile(known, paused_ids=paused)
        metrics.record_reconcile(
            adopted=len(report.adopted), removed=len(report.removed), missing=len(report.missing)
        )
        adopted = []
        for sid in report.adopted:
            with contextlib.suppress(SandboxNotFoundError):
                adopted.append(self._sandboxes.get(sid))
        return report, adopted


def _memory_mb(meminfo: Path = Path("/proc/meminfo")) -> int:
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 0


def _with_mounts(request: SandboxRequest, binds: list[tuple[Path, str]]) -> SandboxRequest:
    from dataclasses import replace

    return replace(request, volume_mounts=tuple(binds))
