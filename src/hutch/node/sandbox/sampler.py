"""``UsageSampler``: every few seconds, one resource sample per running sandbox (ADR 0010).

Each tick reads every running sandbox's counters through a :class:`UsageProbe` (in one
worker thread: the reads are blocking file reads) and appends a :class:`UsageSample` to
that sandbox's ring (a bounded deque: ``keep`` samples, oldest dropped). A sandbox that is
no longer running loses its ring at the next tick, so memory stays bounded by
``max_sandboxes x keep``.

``cpu_used_pct`` is the CPU time used between two readings over the wall time between
them and the sandbox's CPUs (its quota, or its requested count), in percent of what the
sandbox may use (0-100, as E2B reports it). A sandbox's first sample averages since its
PID 1 started (a pooled sandbox's boot included). The upper directory is walked only
every ``disk_every`` ticks (a large tree costs real time); the samples between repeat the
last walk's numbers. A sandbox paused without its memory (ADR 0004: no container) gets
samples of its disk alone (no CPU, no memory in use), so its disk use stays reported.
``per_sandbox`` is a chore run in the same thread for each sandbox at each tick (the
node bounds each sandbox's ``envd.log`` with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from hutch.node.sandbox.models import RunningSandbox
from hutch.node.sandbox.ports import SandboxUsage, UsageProbe

log = logging.getLogger("hutch.node.sampler")

_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageSample:
    """One point of a sandbox's metrics (E2B's ``SandboxMetric``); ``timestamp`` is epoch s."""

    timestamp: float
    cpu_count: int
    cpu_used_pct: float
    mem_used: int
    mem_total: int
    mem_cache: int
    disk_used: int
    disk_total: int


@dataclass(slots=True)
class _Track:
    ring: deque[UsageSample]
    cpu_ns: int | None = None
    at: float | None = None  # monotonic time of cpu_ns
    disk: tuple[int, int] = (0, 0)


class UsageSampler:
    """See the module docstring. ``start()`` once; ``aclose()`` stops the loop."""

    def __init__(
        self,
        *,
        sandboxes: Callable[[], Iterable[RunningSandbox]],
        probe: UsageProbe,
        interval_s: float = 5.0,
        keep: int = 720,
        disk_every: int = 6,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        per_sandbox: Callable[[RunningSandbox], None] | None = None,
    ) -> None:
        self._sandboxes = sandboxes
        self._per_sandbox = per_sandbox
        self._probe = probe
        self._interval = interval_s
        self._keep = keep
        self._disk_every = max(1, disk_every)
        self._clock = clock
        self._monotonic = monotonic
        self._tracks: dict[str, _Track] = {}
        self._ticks = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Sample now and then every ``interval_s`` until :meth:`aclose`."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="hutch-usage-sampler")

    async def aclose(self) -> None:
        """Stop sampling (the rings are kept)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.sample_all()
            except Exception:  # one bad tick must not end sampling for good
                log.exception("usage sampling failed")
            await asyncio.sleep(self._interval)

    async def sample_all(self) -> None:
        """One tick: a sample of every running sandbox; drop rings of the gone ones."""
        running = list(self._sandboxes())
        with_disk = self._ticks % self._disk_every == 0
        self._ticks += 1
        readings = await asyncio.to_thread(self._read_all, running, with_disk)
        alive = {s.sandbox_id for s in running}
        for sid in list(self._tracks):
            if sid not in alive:
                del self._tracks[sid]
        for sandbox, usage, at in readings:
            self._record(sandbox, usage, at=at)

    def _read_all(
        self, running: list[RunningSandbox], with_disk: bool
    ) -> list[tuple[RunningSandbox, SandboxUsage, float]]:
        out = []
        for sandbox in running:
            # A new sandbox has no walk yet: walk it now whatever the tick. A sandbox paused
            # without its memory is all disk: its walk is the only reading it has.
            disk = (
                with_disk
                or sandbox.sandbox_id not in self._tracks
                or sandbox.paused == "filesystem"
            )
            try:
                usage = self._probe.read(sandbox, with_disk=disk)
            except OSError as exc:  # killed between list and read
                log.debug("sandbox %s: no usage (%s)", sandbox.sandbox_id, exc)
                continue
            out.append((sandbox, usage, self._monotonic()))
            if self._per_sandbox is not None:
                try:
                    self._per_sandbox(sandbox)
                except OSError as exc:
                    log.warning("sandbox %s: %s", sandbox.sandbox_id, exc)
        return out

    def _record(self, sandbox: RunningSandbox, usage: SandboxUsage, *, at: float) -> None:
        track = self._tracks.get(sandbox.sandbox_id)
        if track is None:
            track = self._tracks[sandbox.sandbox_id] = _Track(ring=deque(maxlen=self._keep))
        now = self._clock()
        cpus = usage.cpu_limit or sandbox.cpu_count or 1.0
        # A counter that went back is a new container (a resume that booted it again).
        if (
            track.cpu_ns is not None
            and track.at is not None
            and at > track.at
            and usage.cpu_time_ns >= track.cpu_ns
        ):
            used_ns, wall_s = usage.cpu_time_ns - track.cpu_ns, at - track.at
        else:
            age = usage.age_s if usage.age_s is not None else now - sandbox.started_at
            used_ns, wall_s = usage.cpu_time_ns, max(age, 1e-3)
        pct = 100.0 * max(used_ns, 0) / 1e9 / wall_s / cpus
        track.cpu_ns, track.at = usage.cpu_time_ns, at
        if usage.disk_used is not None and usage.disk_total is not None:
            track.disk = (usage.disk_used, usage.disk_total)
        track.ring.append(
            UsageSample(
                timestamp=now,
                cpu_count=max(1, math.ceil(cpus - 1e-9)),
                cpu_used_pct=round(min(pct, 100.0), 2),
                mem_used=usage.mem_used,
                mem_total=usage.mem_limit or sandbox.memory_mb * _MIB,
                mem_cache=usage.mem_cache,
                disk_used=track.disk[0],
                disk_total=track.disk[1],
            )
        )

    def samples(
        self, sandbox_id: str, *, start: float | None = None, end: float | None = None
    ) -> list[UsageSample]:
        """The kept samples of ``sandbox_id`` with ``start <= timestamp <= end``, oldest first."""
        track = self._tracks.get(sandbox_id)
        if track is None:
            return []
        return [
            s
            for s in track.ring
            if (start is None or s.timestamp >= start) and (end is None or s.timestamp <= end)
        ]

    def latest(self, sandbox_id: str) -> UsageSample | None:
        """The newest sample of ``sandbox_id``, if any."""
        track = self._tracks.get(sandbox_id)
        return track.ring[-1] if track is not None and track.ring else None
