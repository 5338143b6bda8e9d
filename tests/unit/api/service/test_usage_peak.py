"""``UsageSampler.peak`` (``GET /teams/{id}/metrics/max``) over a fake store's counts and a
fake sample store (the real one, on SQLite and PostgreSQL: tests/integration/store/
test_usage_samples.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from datetime import UTC, datetime, timedelta

import pytest

from hutch.api.models import SandboxState, TeamSample
from hutch.api.service.usage import UsageSampler
from hutch.shared.errors import InvalidArgumentError
from hutch.shared.ids import TeamID

TEAM = TeamID("team-a")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


class CountsStore:
    """Answers ``usage_by_team`` from a queue of ``(running, started)`` (fake for units)."""

    def __init__(self, counts: list[tuple[int, int]]) -> None:
        self.counts = counts

    async def usage_by_team(
        self, *, states: Collection[SandboxState], started_after: datetime
    ) -> dict[TeamID, tuple[int, int]]:
        return {TEAM: self.counts.pop(0)}


class MemorySamples:
    """The sample store as a list (fake for units)."""

    def __init__(self) -> None:
        self.rows: list[tuple[TeamID, TeamSample]] = []

    async def record(
        self, at: datetime, samples: Mapping[TeamID, tuple[int, float]], *, prune_before: datetime
    ) -> int:
        self.rows += [(t, TeamSample(at, c, r)) for t, (c, r) in samples.items()]
        return 0

    async def series(self, team_id: TeamID, *, start: datetime, end: datetime) -> list[TeamSample]:
        return [s for t, s in self.rows if t == team_id and start <= s.at <= end]

    async def peak(
        self, team_id: TeamID, metric: str, *, start: datetime, end: datetime
    ) -> TeamSample | None:
        samples = await self.series(team_id, start=start, end=end)
        key = (
            (lambda s: s.concurrent)
            if metric == "concurrent_sandboxes"
            else (lambda s: s.start_rate)
        )
        return max(samples, key=key) if samples else None

    async def last_active(self) -> dict[TeamID, datetime]:
        return {}


def _sampler(counts: list[tuple[int, int]]) -> UsageSampler:
    sampler = UsageSampler(sandboxes=CountsStore(counts), samples=MemorySamples(),  # type: ignore[arg-type]
                           interval_s=5, clock=lambda: T0)  # fmt: skip
    for i in range(len(counts)):
        asyncio.run(sampler.sample_once(T0 + timedelta(seconds=5 * (i + 1))))
    return sampler


def _peak(sampler: UsageSampler, *args: object, **kw: object) -> tuple[datetime, float]:
    return asyncio.run(sampler.peak(*args, **kw))  # type: ignore[arg-type]


def test_peak_is_the_first_of_the_highest_samples() -> None:
    sampler = _sampler([(1, 5), (3, 0), (3, 10), (2, 0)])
    end = T0 + timedelta(minutes=1)
    at, value = _peak(sampler, TEAM, "concurrent_sandboxes", start=T0, end=end)
    assert (at, value) == (T0 + timedelta(seconds=10), 3)
    at, value = _peak(sampler, TEAM, "sandbox_start_rate", start=T0, end=end)
    assert (at, value) == (T0 + timedelta(seconds=15), 2.0)  # 10 starts in 5 s
    # A window after the peak; one with no samples (another team's, or none yet).
    later = T0 + timedelta(seconds=16)
    assert _peak(sampler, TEAM, "concurrent_sandboxes", start=later, end=end) == (
        T0 + timedelta(seconds=20), 2,
    )  # fmt: skip
    assert _peak(sampler, TeamID("team-b"), "concurrent_sandboxes", start=T0, end=end) == (end, 0)


def test_peak_refuses_an_unknown_metric_and_an_inverted_window() -> None:
    sampler = _sampler([(1, 1)])
    with pytest.raises(InvalidArgumentError, match="metric must be one of concurrent_sandboxes"):
        _peak(sampler, TEAM, "cpu", start=None, end=None)
    with pytest.raises(InvalidArgumentError, match="start must not be after end"):
        _peak(sampler, TEAM, "concurrent_sandboxes", start=T0 + timedelta(hours=1), end=T0)
