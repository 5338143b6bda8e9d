"""``LocalNodeClient``: the api's ``NodeClient`` Protocol over an in-process ``SandboxManager``.

This is the seam where the node's vocabulary (``SandboxRequest``, ``RunningSandbox``) becomes
the api's (``SandboxSpec``, ``PlacedSandbox``). It also keeps the proxy's catalog current:
a sandbox becomes routable only once envd answered, and stops being routable *before* the
node tears it down, so the proxy never forwards into a half-destroyed network.

Template ids: ``hutch serve`` seeds each on-disk template into the store with id = alias =
its directory name (``serve/templates.py``), so ``spec.template_id`` is the node's name.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from hutch.api.service.ports import (
    PlacedSandbox,
    ResumedSandbox,
    SandboxLogLine,
    SandboxMetrics,
    SandboxSpec,
)
from hutch.node.sandbox.envd_log import EnvdLogEntry
from hutch.node.sandbox.manager import SandboxManager
from hutch.node.sandbox.models import SandboxNotFoundError, SandboxRequest
from hutch.node.sandbox.sampler import UsageSample, UsageSampler
from hutch.node.templates.artifact import TemplateNotFoundError
from hutch.node.templates.image import delete_template
from hutch.node.templates.snapshot import prune_snapshot_layers
from hutch.proxy.catalog import InMemorySandboxCatalog
from hutch.serve.catalog import route_for
from hutch.shared.errors import InvalidArgumentError, NotFoundError
from hutch.shared.ids import NodeID, SandboxID, TemplateID
from hutch.volumes.base import VolumeBackend

#: Killed sandboxes whose last log lines are kept, and how much of each log.
_KEEP_KILLED = 256
_KILLED_LOG_BYTES = 64 * 1024


class LocalNodeClient:
    """A :class:`hutch.api.service.ports.NodeClient` for the node in this process."""

    def __init__(
        self,
        manager: SandboxManager,
        catalog: InMemorySandboxCatalog,
        *,
        node_id: NodeID,
        sampler: UsageSampler,
        volumes: Mapping[str, VolumeBackend] | None = None,
    ) -> None:
        self._volumes = dict(volumes or {})
        self._manager = manager
        self._catalog = catalog
        self._node_id = node_id
        self._sampler = sampler
        self._killed_logs: OrderedDict[str, tuple[SandboxLogLine, ...]] = OrderedDict()

    @property
    def node_id(self) -> NodeID:
        """See ``NodeClient.node_id``."""
        return self._node_id

    async def create(self, spec: SandboxSpec) -> PlacedSandbox:
        """Start the sandbox on the node, then publish its route to the proxy.

        Volumes are mounted on the host by their backend (once per volume), and that mount
        is bind-mounted into the sandbox.
        """
        binds = await self._volume_binds(spec)
        running = await self._manager.create(
            SandboxRequest(
                sandbox_id=spec.sandbox_id,
                template=spec.template_id,
                env_vars=dict(spec.env_vars),
                access_token=spec.envd_access_token,
                cpu_count=spec.cpu_count,
                memory_mb=spec.memory_mb,
                allow_internet=spec.allow_internet,
                metadata=dict(spec.metadata),
                volume_mounts=tuple(binds),
            )
        )
        route = route_for(spec.sandbox_id, str(running.address), spec.envd_access_token)
        self._catalog.put(dataclasses.replace(route, auto_resume=spec.auto_resume))
        return PlacedSandbox(
            sandbox_id=spec.sandbox_id, node_id=self._node_id, address=str(running.address)
        )

    async def _volume_binds(self, spec: SandboxSpec) -> list[tuple[Path, str]]:
        """``(host mount, path in the sandbox)`` of the spec's volumes, mounted on the host."""
        binds = []
        for mount in spec.volume_mounts:
            backend = self._volumes.get(mount.backend)
            if backend is None or not backend.mountable:
                raise InvalidArgumentError(
                    f"volume {mount.volume_id}: backend {mount.backend!r} cannot be mounted here"
                )
            binds.append((Path(await backend.host_path(mount.volume_id)), mount.path))
        return binds

    async def kill(self, sandbox_id: SandboxID) -> None:
        """Unroute first, then destroy; idempotent like the manager's ``kill``.

        The last lines of its envd log are kept (for ``_KEEP_KILLED`` sandboxes), so that
        ``/logs`` still answers for a sandbox that just ended.
        """
        self._catalog.remove(sandbox_id)
        with contextlib.suppress(SandboxNotFoundError):
            tail = self._manager.envd_log(sandbox_id, max_bytes=_KILLED_LOG_BYTES)
            self._killed_logs[sandbox_id] = tuple(_log_line(e) for e in tail)
            while len(self._killed_logs) > _KEEP_KILLED:
                self._killed_logs.popitem(last=False)
        await self._manager.kill(sandbox_id)

    async def list_running(self) -> Sequence[SandboxID]:
        """See ``NodeClient.list_running``."""
        return [SandboxID(s.sandbox_id) for s in self._manager.list()]

    async def pause(self, sandbox_id: SandboxID, *, keep_memory: bool) -> bool:
        """Freeze (or stop) the sandbox; the proxy keeps its route, marked not running, so
        that traffic can wake it (auto-resume)."""
        try:
            sandbox = await self._manager.pause(sandbox_id, keep_memory=keep_memory)
        except SandboxNotFoundError as exc:
            raise NotFoundError(f"sandbox {sandbox_id} is not on this node") from exc
        route = self._catalog.find(sandbox_id)
        if route is not None:
            self._catalog.put(dataclasses.replace(route, running=False))
        return sandbox.paused == "full"

    async def resume(self, spec: SandboxSpec, *, keep_memory: bool) -> ResumedSandbox:
        """Thaw or reboot the sandbox, then route to it again (its address may be new).

        Its volumes' host mounts are made sure of first: a reboot binds them again, and an
        unmounted mount point would silently be an empty directory of the host.
        """
        await self._volume_binds(spec)
        try:
            sandbox, kept = await self._manager.resume(
                spec.sandbox_id, keep_memory=keep_memory, env_vars=dict(spec.env_vars),
                access_token=spec.envd_access_token,
            )  # fmt: skip
        except SandboxNotFoundError as exc:
            raise NotFoundError(f"sandbox {spec.sandbox_id} is not on this node") from exc
        old = self._catalog.find(spec.sandbox_id)
        route = route_for(spec.sandbox_id, str(sandbox.address), spec.envd_access_token)
        if old is not None:
            route = dataclasses.replace(route, auto_resume=old.auto_resume)
        self._catalog.put(route)
        placed = PlacedSandbox(
            sandbox_id=spec.sandbox_id, node_id=self._node_id, address=str(sandbox.address)
        )
        return ResumedSandbox(placed=placed, memory_kept=kept)

    async def snapshot(self, sandbox_id: SandboxID, *, snapshot_id: TemplateID) -> None:
        """See ``NodeClient.snapshot``."""
        try:
            await self._manager.snapshot(sandbox_id, name=snapshot_id)
        except SandboxNotFoundError as exc:
            raise NotFoundError(f"sandbox {sandbox_id} is not on this node") from exc

    async def delete_snapshot(self, snapshot_id: TemplateID) -> None:
        """See ``NodeClient.delete_snapshot``."""
        templates_dir = self._manager.config.templates_dir
        if templates_dir is None:
            return
        await asyncio.to_thread(_delete_snapshot, templates_dir, snapshot_id)

    async def set_metadata(self, sandbox_id: SandboxID, metadata: Mapping[str, str]) -> None:
        """See ``NodeClient.set_metadata``."""
        try:
            self._manager.set_metadata(sandbox_id, metadata)
        except SandboxNotFoundError as exc:
            raise NotFoundError(f"sandbox {sandbox_id} is not running here") from exc

    async def metrics(
        self, sandbox_id: SandboxID, *, start: datetime | None, end: datetime | None
    ) -> Sequence[SandboxMetrics]:
        """The sampler's samples of a running sandbox (empty until its first tick)."""
        try:
            self._manager.get(sandbox_id)
        except SandboxNotFoundError as exc:
            raise NotFoundError(f"sandbox {sandbox_id} is not running here") from exc
        samples = self._sampler.samples(
            sandbox_id,
            start=start.timestamp() if start is not None else None,
            end=end.timestamp() if end is not None else None,
        )
        return [_metrics(s) for s in samples]

    async def logs(self, sandbox_id: SandboxID) -> Sequence[SandboxLogLine]:
        """The envd log of a running sandbox; the kept tail of a killed one."""
        try:
            entries = self._manager.envd_log(sandbox_id)
        except SandboxNotFoundError:
            return list(self._killed_logs.get(sandbox_id, ()))
        return [_log_line(e) for e in entries]


def _metrics(sample: UsageSample) -> SandboxMetrics:
    return SandboxMetrics(
        timestamp=datetime.fromtimestamp(sample.timestamp, tz=UTC),
        cpu_count=sample.cpu_count,
        cpu_used_pct=sample.cpu_used_pct,
        mem_used=sample.mem_used,
        mem_total=sample.mem_total,
        mem_cache=sample.mem_cache,
        disk_used=sample.disk_used,
        disk_total=sample.disk_total,
    )


def _log_line(entry: EnvdLogEntry) -> SandboxLogLine:
    return SandboxLogLine(
        timestamp=datetime.fromtimestamp(entry.timestamp, tz=UTC),
        message=entry.message,
        level=entry.level,
        fields=dict(entry.fields),
    )


def _delete_snapshot(templates_dir: Path, name: str) -> None:
    with contextlib.suppress(TemplateNotFoundError):
        delete_template(templates_dir, name)
    prune_snapshot_layers(templates_dir)
