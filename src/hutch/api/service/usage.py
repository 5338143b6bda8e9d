"""Team usage (issue 16): what ``GET /teams/{teamID}/metrics`` and ``hutch team usage`` show.

:class:`UsageSampler` counts, every ``interval_s`` (5 s, E2B's step), each team's running
sandboxes and the sandboxes started since the previous sample (two grouped queries), and
keeps the samples of the last ``keep_s`` in memory: E2B's ``TeamMetric`` series
(``concurrentSandboxes``, ``sandboxStartRate`` per second). The series is per api process
and starts empty when it starts. :meth:`UsageSampler.current` is the live use that quotas
are checked against (running count, vCPUs, memory, volume bytes), read from the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from hutch.api.models import SandboxState
from hutch.api.store.base import Clock, SandboxStore, VolumeStore, utc_now
from hutch.shared.errors import InvalidArgumentError
from hutch.shared.ids import TeamID

_log = logging.getLogger(__name__)

_RUNNING = frozenset(
    {SandboxState.CREATING, SandboxState.RUNNING, SandboxState.PAUSING, SandboxState.RESUMING}
)

_PAUSED = frozenset({SandboxState.PAUSING, SandboxState.PAUSED})


@dataclass(frozen=True, slots=True)
class TeamSample:
    """One point of a team's series."""

    at: datetime
    concurrent: int
    start_rate: float


#: The metrics ``GET /teams/{id}/metrics/max`` answers (E2B's names) and their values.
PEAK_METRICS: dict[str, Callable[[TeamSample], float]] = {
    "concurrent_sandboxes": lambda s: s.concurrent,
    "sandbox_start_rate": lambda s: s.start_rate,
}


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
    """Samples every team's sandboxes; answers series and live use."""

    def __init__(
        self,
        *,
        sandboxes: SandboxStore,
        volumes: VolumeStore | None = None,
        interval_s: float = 5.0,
        keep_s: float = 86_400.0,
        clock: Clock = utc_now,
    ) -> None:
        self._sandboxes = sandboxes
        self._volumes = volumes
        self._interval_s = interval_s
        self._samples: dict[TeamID, deque[TeamSample]] = {}
        self._maxlen = max(1, int(keep_s / interval_s))
        self._clock = clock
        self._last: datetime | None = None

    async def sample_once(self, now: datetime) -> None:
        """Record one sample of every team that has sandboxes, at ``now``."""
        since = self._last if self._last is not None else now - timedelta(seconds=self._interval_s)
        counts = await self._sandboxes.usage_by_team(states=_RUNNING, started_after=since)
        seconds = max((now - since).total_seconds(), 1e-9)
        for team_id in set(counts) | set(self._samples):
            running, started = counts.get(team_id, (0, 0))
            series = self._samples.setdefault(team_id, deque(maxlen=self._maxlen))
            series.append(TeamSample(at=now, concurrent=running, start_rate=started / seconds))
        self._last = now

    def series(
        self, team_id: TeamID, *, start: datetime | None, end: datetime | None
    ) -> list[TeamSample]:
        """The team's samples in ``[start, end]`` (default: the last hour until now)."""
        end = end or self._clock()
        start = start or end - timedelta(hours=1)
        if start > end:
            raise InvalidArgumentError("start must not be after end")
        return [s for s in self._samples.get(team_id, ()) if start <= s.at <= end]

    def peak(
        self, team_id: TeamID, metric: str, *, start: datetime | None, end: datetime | None
    ) -> tuple[datetime, float]:
        """``GET /teams/{id}/metrics/max``: the highest ``metric`` (one of
        :data:`PEAK_METRICS`) among the team's samples in ``[start, end]`` and the time of its
        first sample; ``(end, 0)`` when the window holds none (nothing ran)."""
        if metric not in PEAK_METRICS:
            raise InvalidArgumentError(
                f"metric must be one of {', '.join(PEAK_METRICS)}, not {metric!r}"
            )
        end = end or self._clock()
        samples = self.series(team_id, start=start, end=end)
        if not samples:
            return end, 0
        value = PEAK_METRICS[metric]
        best = max(samples, key=value)  # the first of equal ones
        return best.at, value(best)

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
        cancelled; errors are logged, never fatal."""
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.sample_once(self._clock())
            except asyncio.CancelledError:
                raise
            except Exception:
                _log.exception("usage sample failed")
