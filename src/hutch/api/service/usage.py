"""Team usage (issue 16): what ``GET /teams/{teamID}/metrics`` and ``hutch team usage`` show.

:class:`UsageSampler` counts, every ``interval_s`` (5 s, E2B's step), each team's running
sandboxes and the sandboxes started since the previous sample (two grouped queries):
E2B's ``TeamMetric`` series (``concurrentSandboxes``, ``sandboxStartRate`` per second).
Its :meth:`~UsageSampler.run` is a singleton of the elected leader (ADR 0024), which writes
each sample to the store (``team_usage_samples``, issue 11) and deletes the ones older than
``keep_s`` (24 h) in the same transaction; :meth:`~UsageSampler.series` and
:meth:`~UsageSampler.peak` read the store, so every api answers the same series and a
leader change keeps the history. :meth:`UsageSampler.current` is the live use that quotas
are checked against (running count, vCPUs, memory, volume bytes), read from the store.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from hutch.api.models import SandboxState, TeamSample
from hutch.api.store.base import Clock, SandboxStore, UsageSampleStore, VolumeStore, utc_now
from hutch.shared.errors import InvalidArgumentError
from hutch.shared.ids import TeamID

_log = logging.getLogger(__name__)

_RUNNING = frozenset(
    {SandboxState.CREATING, SandboxState.RUNNING, SandboxState.PAUSING, SandboxState.RESUMING}
)

_PAUSED = frozenset({SandboxState.PAUSING, SandboxState.PAUSED})


__all__ = ["PEAK_METRICS", "TeamSample", "TeamUse", "UsageSampler"]

#: The metrics ``GET /teams/{id}/metrics/max`` answers (E2B's names).
PEAK_METRICS = ("concurrent_sandboxes", "sandbox_start_rate")


@dataclass(frozen=True, slots=True)
class TeamUse:
    """A team's live use, as its quotas count it."""

    running_sandboxes: int
    vcpus: int
    memory_mb: int
    volume_bytes: int
    #: Paused (and pausing) sandboxes kept: what ``maxPausedSandboxes`` counts.
    paused_sandboxes: int = 0


class UsageSampler:
    """Samples every team's sandboxes into the store; answers series and live use."""

    def __init__(
        self,
        *,
        sandboxes: SandboxStore,
        samples: UsageSampleStore,
        volumes: VolumeStore | None = None,
        interval_s: float = 5.0,
        keep_s: float = 86_400.0,
        clock: Clock = utc_now,
    ) -> None:
        self._sandboxes = sandboxes
        self._samples = samples
        self._volumes = volumes
        self._interval_s = interval_s
        self._keep = timedelta(seconds=keep_s)
        self._clock = clock
        self._last: datetime | None = None
        #: Teams that get a sample (0 when idle) → their latest non-zero one; a team idle
        #: for ``keep_s`` drops out. Seeded from the store when sampling (re)starts, so a
        #: new leader carries the previous one's series on.
        self._active: dict[TeamID, datetime] | None = None

    async def sample_once(self, now: datetime) -> None:
        """Record one sample of every team that has (or recently had) sandboxes, at
        ``now``, and delete the samples older than ``keep_s`` before ``now``."""
        since = self._last if self._last is not None else now - timedelta(seconds=self._interval_s)
        counts = await self._sandboxes.usage_by_team(states=_RUNNING, started_after=since)
        if self._active is None:
            self._active = await self._samples.last_active()
        seconds = max((now - since).total_seconds(), 1e-9)
        cutoff = now - self._keep
        rows: dict[TeamID, tuple[int, float]] = {}
        for team_id in set(counts) | set(self._active):
            running, started = counts.get(team_id, (0, 0))
            rows[team_id] = (running, started / seconds)
            if running or started:
                self._active[team_id] = now
            elif self._active[team_id] < cutoff:
                del self._active[team_id]
        await self._samples.record(now, rows, prune_before=cutoff)
        self._last = now

    def _window(self, start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
        end = end or self._clock()
        start = start or end - timedelta(hours=1)
        if start > end:
            raise InvalidArgumentError("start must not be after end")
        return start, end

    async def series(
        self, team_id: TeamID, *, start: datetime | None, end: datetime | None
    ) -> list[TeamSample]:
        """The team's samples in ``[start, end]`` (default: the last hour until now)."""
        start, end = self._window(start, end)
        return await self._samples.series(team_id, start=start, end=end)

    async def peak(
        self, team_id: TeamID, metric: str, *, start: datetime | None, end: datetime | None
    ) -> tuple[datetime, float]:
        """``GET /teams/{id}/metrics/max``: the highest ``metric`` (one of
        :data:`PEAK_METRICS`) among the team's samples in ``[start, end]`` and the time of its
        first sample; ``(end, 0)`` when the window holds none (nothing ran)."""
        if metric not in PEAK_METRICS:
            raise InvalidArgumentError(
                f"metric must be one of {', '.join(PEAK_METRICS)}, not {metric!r}"
            )
        start, end = self._window(start, end)
        best = await self._samples.peak(team_id, metric, start=start, end=end)
        if best is None:
            return end, 0
        value = best.concurrent if metric == "concurrent_sandboxes" else best.start_rate
        return best.at, value

    async def current(self, team_id: TeamID) -> TeamUse:
        """The team's live use, from the store."""
        count, vcpus, memory_mb = await self._sandboxes.team_load(team_id, states=_RUNNING)
        volume_bytes = 0
        if self._volumes is not None:
            owned = await self._volumes.list_volumes(team_id=team_id)
            volume_bytes = sum(v.quota_bytes for v in owned)
        paused, _, _ = await self._sandboxes.team_load(team_id, states=_PAUSED)
        return TeamUse(
            running_sandboxes=count, vcpus=vcpus, memory_mb=memory_mb,
            volume_bytes=volume_bytes, paused_sandboxes=paused,
        )  # fmt: skip

    async def run(self) -> None:
        """Sample every ``interval_s`` (the first one ``interval_s`` after the start) until
        cancelled; errors are logged, never fatal. Each run (a new term as leader) starts
        afresh from the store: the rate's window and the sampled teams."""
        self._last, self._active = None, None
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.sample_once(self._clock())
            except asyncio.CancelledError:
                raise
            except Exception:
                _log.exception("usage sample failed")
