"""``FakeNodeClient``: an in-memory node satisfying ``hutch.api.service.ports.NodeClient``.

It keeps a dict of "running" sandboxes, can be made full (``capacity``) or made to fail
the next create (``fail_next_create``), and records every call, so tests can check that
store and node agree.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from hutch.api.service.ports import (
    PlacedSandbox,
    ReconciledNode,
    ResumedSandbox,
    SandboxLogLine,
    SandboxMetrics,
    SandboxSpec,
)
from hutch.shared.egress import EgressPolicy
from hutch.shared.errors import HutchError, NotFoundError, ResourceExhaustedError
from hutch.shared.ids import NodeID, SandboxID, TemplateID


@dataclass
class FakeNodeClient:
    """See the module docstring. Not thread-safe; tests read it between requests."""

    node_id: NodeID = field(default_factory=lambda: NodeID("fake-node"))
    capacity: int | None = None
    #: Raised by the next ``create`` (after the node "started" the sandbox, so a leak
    #: would show), then cleared.
    fail_next_create: BaseException | None = None
    #: Raised by every ``kill`` while set (to test failed rollbacks).
    fail_kill: HutchError | None = None
    #: Set to make ``create`` wait until it is set (to test in-flight retries).
    create_gate: asyncio.Event | None = None
    #: Raised by the next ``set_metadata`` (the fault between the store and node steps of
    #: a metadata patch), then cleared.
    fail_next_set_metadata: BaseException | None = None
    #: Set to make ``set_metadata`` wait until it is set (to test serialisation).
    set_metadata_gate: asyncio.Event | None = None
    #: Paused sandboxes and their mode (``full`` / ``filesystem``).
    paused: dict[SandboxID, str] = field(default_factory=dict)
    #: False: every pause keeps only the filesystem (as a runtime without a freezer).
    keeps_memory: bool = True
    fail_next_pause: BaseException | None = None
    pause_gate: asyncio.Event | None = None
    resume_gate: asyncio.Event | None = None
    resumes: list[SandboxID] = field(default_factory=list)
    #: Snapshot template id -> the sandbox it was taken of.
    snapshots: dict[TemplateID, SandboxID] = field(default_factory=dict)
    fail_next_snapshot: BaseException | None = None
    #: The node's live copy of each running sandbox's metadata.
    metadata: dict[SandboxID, dict[str, str]] = field(default_factory=dict)
    running: dict[SandboxID, SandboxSpec] = field(default_factory=dict)
    created: list[SandboxID] = field(default_factory=list)
    killed: list[SandboxID] = field(default_factory=list)
    #: The policy each PUT network gave a sandbox.
    networks: dict[SandboxID, EgressPolicy] = field(default_factory=dict)
    logs_by_id: dict[SandboxID, list[SandboxLogLine]] = field(default_factory=dict)

    async def create(self, spec: SandboxSpec) -> PlacedSandbox:
        if self.capacity is not None and len(self.running) >= self.capacity:
            raise ResourceExhaustedError(f"node {self.node_id} is full")
        self.running[spec.sandbox_id] = spec
        self.metadata[spec.sandbox_id] = dict(spec.metadata)
        self.created.append(spec.sandbox_id)
        if self.create_gate is not None:
            await self.create_gate.wait()
        if self.fail_next_create is not None:
            exc, self.fail_next_create = self.fail_next_create, None
            raise exc
        n = len(self.created)
        return PlacedSandbox(
            sandbox_id=spec.sandbox_id, node_id=self.node_id, address=f"10.11.0.{n % 250 + 2}"
        )

    async def kill(self, sandbox_id: SandboxID) -> None:
        if self.fail_kill is not None:
            raise self.fail_kill
        self.running.pop(sandbox_id, None)
        self.paused.pop(sandbox_id, None)
        self.metadata.pop(sandbox_id, None)
        self.killed.append(sandbox_id)

    async def set_metadata(self, sandbox_id: SandboxID, metadata: Mapping[str, str]) -> None:
        if self.set_metadata_gate is not None:
            await self.set_metadata_gate.wait()
        if self.fail_next_set_metadata is not None:
            exc, self.fail_next_set_metadata = self.fail_next_set_metadata, None
            raise exc
        if sandbox_id not in self.running:
            raise NotFoundError(f"sandbox {sandbox_id} is not running on {self.node_id}")
        # Yield once, as a real node would: interleavings show up in the concurrency test.
        await asyncio.sleep(0)
        self.metadata[sandbox_id] = dict(metadata)

    async def set_network(self, sandbox_id: SandboxID, policy: EgressPolicy) -> None:
        if sandbox_id not in self.running:
            raise NotFoundError(f"sandbox {sandbox_id} is not running on {self.node_id}")
        self.networks[sandbox_id] = policy

    async def pause(self, sandbox_id: SandboxID, *, keep_memory: bool) -> bool:
        if self.pause_gate is not None:
            await self.pause_gate.wait()
        if self.fail_next_pause is not None:
            exc, self.fail_next_pause = self.fail_next_pause, None
            raise exc
        if sandbox_id not in self.running:
            raise NotFoundError(f"sandbox {sandbox_id} is not on {self.node_id}")
        kept = keep_memory and self.keeps_memory
        self.paused[sandbox_id] = "full" if kept else "filesystem"
        return kept

    async def resume(self, spec: SandboxSpec, *, keep_memory: bool) -> ResumedSandbox:
        if self.resume_gate is not None:
            await self.resume_gate.wait()
        if spec.sandbox_id not in self.running:
            raise NotFoundError(f"sandbox {spec.sandbox_id} is not on {self.node_id}")
        mode = self.paused.pop(spec.sandbox_id, None)
        self.resumes.append(spec.sandbox_id)
        placed = PlacedSandbox(
            sandbox_id=spec.sandbox_id, node_id=self.node_id, address="10.11.0.250"
        )
        return ResumedSandbox(placed=placed, memory_kept=mode == "full" and keep_memory)

    async def snapshot(self, sandbox_id: SandboxID, *, snapshot_id: TemplateID) -> None:
        if self.fail_next_snapshot is not None:
            exc, self.fail_next_snapshot = self.fail_next_snapshot, None
            raise exc
        if sandbox_id not in self.running:
            raise NotFoundError(f"sandbox {sandbox_id} is not on {self.node_id}")
        self.snapshots[snapshot_id] = sandbox_id

    async def delete_snapshot(self, snapshot_id: TemplateID) -> None:
        self.snapshots.pop(snapshot_id, None)

    async def list_running(self) -> Sequence[SandboxID]:
        return list(self.running)

    async def metrics(
        self, sandbox_id: SandboxID, *, start: datetime | None, end: datetime | None
    ) -> Sequence[SandboxMetrics]:
        if sandbox_id not in self.running:
            return []
        spec = self.running[sandbox_id]
        return [
            SandboxMetrics(
                timestamp=datetime(2025, 1, 1, tzinfo=UTC),
                cpu_count=spec.cpu_count,
                cpu_used_pct=1.5,
                mem_used=16 * 2**20,
                mem_total=spec.memory_mb * 2**20,
                mem_cache=2**20,
                disk_used=2**20,
                disk_total=spec.disk_mb * 2**20,
            )
        ]

    async def logs(self, sandbox_id: SandboxID) -> Sequence[SandboxLogLine]:
        return list(self.logs_by_id.get(sandbox_id, []))

    async def reconcile(
        self, known: Sequence[SandboxID], *, paused: Sequence[SandboxID]
    ) -> ReconciledNode:
        keep = set(known) | set(paused)
        removed = [sid for sid in self.running if sid not in keep]
        for sid in removed:
            await self.kill(sid)
        adopted = {
            sid: (
                PlacedSandbox(sandbox_id=sid, node_id=self.node_id, address="10.11.0.249"),
                dict(self.metadata.get(sid, {})),
                self.paused.get(sid),
            )
            for sid in self.running
        }
        return ReconciledNode(removed=tuple(removed), adopted=adopted)
