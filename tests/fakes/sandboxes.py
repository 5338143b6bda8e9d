"""Fakes of the node's own parts, for the node API without runc: ``FakeSandboxes`` (the
``SandboxManager`` side that ``NodeService`` uses), ``FakeSamples``, ``FakeTemplates`` and
``FakeVolumeBackend``. Real typed classes that record what they were asked."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import threading
from collections.abc import AsyncIterator, Iterable, Mapping
from ipaddress import IPv4Address
from pathlib import Path

from hutch.node.sandbox.envd_log import EnvdLogEntry
from hutch.node.sandbox.models import (
    ReconcileReport,
    RunningSandbox,
    SandboxNotFoundError,
    SandboxRequest,
)
from hutch.node.sandbox.sampler import UsageSample
from hutch.node.templates.artifact import TemplateNotFoundError
from hutch.node.templates.build import BuildLog, BuildStepError
from hutch.node.templates.image import ImageTemplateOptions, ImportResult, Progress
from hutch.shared.egress import EgressPolicy
from hutch.shared.errors import (
    AlreadyExistsError,
    HutchError,
    NotFoundError,
    ResourceExhaustedError,
)
from hutch.volumes.base import Usage


class FakeSandboxes:
    """Sandboxes in a dict; templates ``busybox`` and ``base`` exist, nothing else."""

    def __init__(self, *, capacity: int = 10, templates: Iterable[str] = ("busybox", "base")):
        self.capacity = capacity
        self.templates = set(templates)
        self.running: dict[str, RunningSandbox] = {}
        self.requests: list[SandboxRequest] = []
        self.killed: list[str] = []
        self.fail_next: HutchError | None = None
        self._n = 0

    def _fail(self) -> None:
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc

    async def create(self, request: SandboxRequest) -> RunningSandbox:
        self._fail()
        if request.template not in self.templates:
            raise TemplateNotFoundError(f"template {request.template!r} is not on this node")
        if request.sandbox_id in self.running:
            raise AlreadyExistsError(f"sandbox {request.sandbox_id} already exists")
        if len(self.running) >= self.capacity:
            raise ResourceExhaustedError(
                "node full", public_message="this node runs as many sandboxes as it may"
            )
        self._n += 1
        self.requests.append(request)
        sandbox = RunningSandbox(
            sandbox_id=request.sandbox_id, template=request.template,
            address=IPv4Address("10.99.0.0") + self._n + 1, envd_url="http://x:49983", pid=1,
            cpu_count=request.cpu_count or 1, memory_mb=request.memory_mb or 512,
            default_user="user", workdir="/home/user", started_at=1000.0 + self._n,
            sandbox_dir=Path("/nonexistent"), metadata=dict(request.metadata),
            volume_mounts=tuple(request.volume_mounts),
        )  # fmt: skip
        self.running[request.sandbox_id] = sandbox
        return sandbox

    async def kill(self, sandbox_id: str) -> bool:
        self.killed.append(sandbox_id)
        return self.running.pop(sandbox_id, None) is not None

    async def pause(self, sandbox_id: str, *, keep_memory: bool = True) -> RunningSandbox:
        sandbox = self.get(sandbox_id)
        paused = dataclasses.replace(sandbox, paused="full" if keep_memory else "filesystem")
        self.running[sandbox_id] = paused
        return paused

    async def resume(
        self,
        sandbox_id: str,
        *,
        keep_memory: bool = True,
        env_vars: Mapping[str, str] | None = None,
        access_token: str | None = None,
    ) -> tuple[RunningSandbox, bool]:
        sandbox = self.get(sandbox_id)
        kept = sandbox.paused == "full" and keep_memory
        resumed = dataclasses.replace(sandbox, paused=None, address=IPv4Address("10.99.1.1"))
        self.running[sandbox_id] = resumed
        return resumed, kept

    async def snapshot(self, sandbox_id: str, *, name: str) -> object:
        self.get(sandbox_id)
        self.templates.add(name)
        return name

    async def set_network(self, sandbox_id: str, policy: EgressPolicy) -> RunningSandbox:
        sandbox = dataclasses.replace(self.get(sandbox_id), egress=policy)
        self.running[sandbox_id] = sandbox
        return sandbox

    def set_metadata(self, sandbox_id: str, metadata: Mapping[str, str]) -> RunningSandbox:
        sandbox = dataclasses.replace(self.get(sandbox_id), metadata=dict(metadata))
        self.running[sandbox_id] = sandbox
        return sandbox

    def list(self) -> list[RunningSandbox]:
        return sorted(self.running.values(), key=lambda s: s.started_at)

    def pool_members(self) -> list[RunningSandbox]:
        return []

    def pool_targets(self) -> dict[str, int]:
        return {}

    def get(self, sandbox_id: str) -> RunningSandbox:
        try:
            return self.running[sandbox_id]
        except KeyError:
            raise SandboxNotFoundError(f"sandbox {sandbox_id} is not on this node") from None

    def envd_log(self, sandbox_id: str, *, max_bytes: int = 1 << 22) -> list[EnvdLogEntry]:
        self.get(sandbox_id)
        return [EnvdLogEntry(timestamp=1000.5, level="info", message=f"envd of {sandbox_id}")]

    async def reconcile(
        self, known_ids: Iterable[str], *, paused_ids: Iterable[str] = ()
    ) -> ReconcileReport:
        keep = set(known_ids) | set(paused_ids)
        removed = [sid for sid in self.running if sid not in keep]
        for sid in removed:
            del self.running[sid]
        missing = sorted(keep - set(self.running))
        adopted = sorted(keep & set(self.running))
        modes = {s: p for s in adopted if (p := self.running[s].paused)}
        return ReconcileReport(removed=removed, missing=missing, adopted=adopted, paused=modes)


class FakeSamples:
    """One sample per running sandbox at t=1000..1002."""

    def samples(
        self, sandbox_id: str, *, start: float | None = None, end: float | None = None
    ) -> list[UsageSample]:
        out = [
            UsageSample(
                timestamp=1000.0 + i,
                cpu_count=1,
                cpu_used_pct=2.5,
                mem_used=10 << 20,
                mem_total=512 << 20,
                mem_cache=1 << 20,
                disk_used=1 << 20,
                disk_total=1 << 30,
            )
            for i in range(3)
        ]
        return [
            s
            for s in out
            if (start is None or s.timestamp >= start) and (end is None or s.timestamp <= end)
        ]


class FakeTemplates:
    """The node's ``TemplateManager`` without skopeo: an import reports progress from a
    worker thread, then waits for ``release`` (so a test can prove the stream is live)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.build_release = threading.Event()
        self.files: dict[str, bytes] = {}
        self.deleted: list[str] = []
        self.published: list[str] = []
        self.builds: list[tuple[str, str]] = []

    async def import_image(
        self, source: str, options: ImageTemplateOptions, *, progress: Progress | None = None
    ) -> ImportResult:
        def work() -> ImportResult:
            if progress is not None:
                progress("copy", 0, 2)
            if not self.release.wait(30):
                raise TimeoutError("the test never released the import")
            if source == "bad":
                from hutch.shared.errors import ImageError

                raise ImageError("bad: not an image", public_message="not an image")
            if progress is not None:
                progress("copy", 2, 2)
            return ImportResult(
                template=None,  # type: ignore[arg-type]  # the wire never sends it
                fingerprint="f" * 64, cache_hit=False, envd_sha256=None,
            )  # fmt: skip

        return await asyncio.to_thread(work)

    async def delete(self, name: str) -> None:
        self.deleted.append(name)

    async def publish(self, *names: str) -> None:
        """No shared artifact directory here (``TemplateManager.publish`` without one)."""
        self.published.extend(names)

    def has_files(self, files_hash: str) -> bool:
        return files_hash in self.files

    async def store_files(self, files_hash: str, chunks: AsyncIterator[bytes]) -> None:
        self.files[files_hash] = b"".join([c async for c in chunks])

    async def run_build(
        self,
        name: str,
        start: Mapping[str, object],
        *,
        cpu_count: float,
        memory_mb: int,
        log: BuildLog,
        build_id: str,
    ) -> None:
        self.builds.append((name, build_id))
        log("info", "step 0 started", "0")
        if not await asyncio.to_thread(self.build_release.wait, 30):
            raise TimeoutError("the test never released the build")
        if start.get("fail"):
            raise BuildStepError("RUN false: exit status 1", step="1")


class FakeVolumeBackend:
    """A mountable backend whose volumes are directories under ``root``."""

    name = "local"
    mountable = True

    def __init__(self, root: Path) -> None:
        self.root = root
        #: Set: this node sees no volume's data (as a node without the api's volumes dir).
        self.holds_nothing = False

        #: Volumes created here (``POST /v1/volumes``) and their quotas.
        self.created: dict[str, int] = {}
        self.deleted: list[str] = []

    async def capacity_bytes(self) -> int:
        return 1 << 40

    async def create(self, volume_id: str, *, quota_bytes: int) -> None:
        (self.root / volume_id).mkdir(parents=True)
        self.created[volume_id] = quota_bytes

    async def delete(self, volume_id: str) -> None:
        shutil.rmtree(self.root / volume_id, ignore_errors=True)
        self.created.pop(volume_id, None)
        self.deleted.append(volume_id)

    async def usage(self, volume_id: str) -> Usage:
        if volume_id not in self.created:
            raise NotFoundError(f"volume {volume_id}: no image here")
        return Usage(used_bytes=0, total_bytes=self.created[volume_id])

    async def host_path(self, volume_id: str) -> str:
        path = self.root / volume_id
        if self.holds_nothing or not path.is_dir():
            raise NotFoundError(f"volume {volume_id}: no image here")
        return str(path)
