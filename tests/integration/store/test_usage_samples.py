"""Team usage samples (issue 11), on both databases: recorded, read back as a series and a
peak, pruned past the retention; and the sampler over the real store carries a series on
across a new term (a new leader's sampler over the same store)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hutch.api.models import NewSandbox, TeamSample
from hutch.api.service.usage import UsageSampler
from hutch.api.store.sql import SqlStore
from hutch.shared.ids import TeamID

from .factories import new_sandbox

T0 = datetime(2026, 1, 1, tzinfo=UTC)
A, B = TeamID("team-a"), TeamID("team-b")


def _at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


async def test_usage_samples_record_series_peak_and_prune(store: SqlStore) -> None:
    usage = store.usage
    assert await usage.record(_at(0), {A: (1, 0.2), B: (7, 0.0)}, prune_before=T0) == 0
    assert await usage.record(_at(5), {A: (3, 0.0)}, prune_before=T0) == 0
    assert await usage.record(_at(10), {A: (3, 0.6)}, prune_before=T0) == 0
    assert await usage.record(_at(15), {A: (0, 0.0)}, prune_before=T0) == 0
    series = await usage.series(A, start=T0, end=_at(60))
    assert series == [
        TeamSample(_at(0), 1, 0.2), TeamSample(_at(5), 3, 0.0),
        TeamSample(_at(10), 3, 0.6), TeamSample(_at(15), 0, 0.0),
    ]  # fmt: skip
    assert await usage.series(A, start=_at(5), end=_at(10)) == series[1:3]  # both ends in
    assert await usage.series(TeamID("nobody"), start=T0, end=_at(60)) == []
    # The peak: the first of the equal highest; None for an empty window.
    assert await usage.peak(A, "concurrent_sandboxes", start=T0, end=_at(60)) == series[1]
    assert await usage.peak(A, "sandbox_start_rate", start=T0, end=_at(60)) == series[2]
    assert await usage.peak(A, "concurrent_sandboxes", start=_at(11), end=_at(60)) == series[3]
    assert await usage.peak(A, "concurrent_sandboxes", start=_at(16), end=_at(60)) is None
    assert await usage.last_active() == {A: _at(10), B: _at(0)}
    # Past the retention: the rows older than the cutoff go, in the same write.
    assert await usage.record(_at(20), {A: (2, 0.0)}, prune_before=_at(10)) == 3  # A 0, 5; B 0
    assert [s.at for s in await usage.series(A, start=T0, end=_at(60))] == [
        _at(10), _at(15), _at(20),
    ]  # fmt: skip
    assert await usage.series(B, start=T0, end=_at(60)) == []
    assert await usage.last_active() == {A: _at(20)}


async def test_usage_sampler_writes_to_the_store_prunes_and_a_new_term_carries_on(
    store: SqlStore, team_id: TeamID
) -> None:
    def sampler() -> UsageSampler:
        return UsageSampler(sandboxes=store.sandboxes, samples=store.usage, interval_s=5,
                            keep_s=20, clock=lambda: _at(1000))  # fmt: skip

    first = sampler()
    for _ in range(2):
        new: NewSandbox = new_sandbox(team_id, started_at=_at(1))
        await store.sandboxes.create_sandbox(new)
    await first.sample_once(_at(5))
    await first.sample_once(_at(10))
    # Another process (a new leader) samples the same store, and reads what the first wrote.
    second = sampler()
    await second.sample_once(_at(15))
    series = await second.series(team_id, start=T0, end=_at(15))
    assert [(s.at, s.concurrent) for s in series] == [(_at(5), 2), (_at(10), 2), (_at(15), 2)]
    assert series[0].start_rate == 2 / 5 and series[1].start_rate == 0
    assert await first.series(team_id, start=T0, end=_at(15)) == series
    assert await second.peak(team_id, "concurrent_sandboxes", start=T0, end=_at(15)) == (
        _at(5), 2,
    )  # fmt: skip
    # keep_s = 20: the sample at 30 deletes the ones before 10.
    await second.sample_once(_at(30))
    assert [s.at for s in await first.series(team_id, start=T0, end=_at(30))] == [
        _at(10), _at(15), _at(30),
    ]  # fmt: skip
