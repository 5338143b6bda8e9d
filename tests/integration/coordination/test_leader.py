"""Leader election on PostgreSQL (ADR 0024): of two electors one leads and runs the
singletons; when the leader's session dies the other takes over. SQLite always leads."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from hutch.api.service.leader import AlwaysLeader
from hutch.api.store.coordination import open_coordination
from hutch.api.store.engine import create_engine
from hutch.api.store.leader import PgLeaderElector
from hutch.api.store.migrations import upgrade_to_head

from .conftest import advisory_locks, terminate


def _singleton(log: list[str], name: str):  # type: ignore[no-untyped-def]
    async def run() -> None:
        log.append(f"{name} started")
        try:
            await asyncio.Event().wait()
        finally:
            log.append(f"{name} stopped")

    return run


async def _until(predicate, what: str) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(15):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_one_of_two_electors_leads_and_the_other_takes_over_when_its_session_dies(
    pg_url: str, admin: AsyncEngine
) -> None:
    engines = [create_engine(pg_url, pool_size=1) for _ in range(2)]
    a, b = (PgLeaderElector(e, interval_s=0.05) for e in engines)
    log: list[str] = []
    a.run_while_leader("reaper", _singleton(log, "a"))
    b.run_while_leader("reaper", _singleton(log, "b"))
    task_a = asyncio.create_task(a.run())
    await _until(lambda: a.is_leader, "a leads")
    task_b: asyncio.Task[None] | None = None
    try:
        for _ in range(10):  # b campaigns again and again, and loses every time
            await b.step()
            assert not b.is_leader
        assert a.running() == ["reaper"] and b.running() == []
        task_b = asyncio.create_task(b.run())
        [pid] = await advisory_locks(admin, granted=True)
        await terminate(admin, pid)  # a's process (or its link to PostgreSQL) died
        await _until(lambda: b.is_leader and not a.is_leader, "b takes over")
        await _until(lambda: "b started" in log, "b's singleton runs")
        assert b.running() == ["reaper"] and a.running() == []
        assert log[:3] == ["a started", "a stopped", "b started"] or log[:3] == [
            "a started",
            "b started",
            "a stopped",
        ]
        # a campaigns again on a fresh session and stays a follower while b leads.
        rounds = a.rounds
        await _until(lambda: a.rounds >= rounds + 5, "a campaigned")
        assert not a.is_leader and b.is_leader
        # b steps down (shutdown): a leads next.
        task_b.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task_b
        await _until(lambda: a.is_leader, "a leads again")
        await _until(lambda: log[-1] == "a started", "a's singleton runs again")
        assert log[-1] == "a started" and "b stopped" in log
    finally:
        for task in (task_a, task_b):
            if task is None:
                continue
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for elector in (a, b):
            await elector.aclose()
        for engine in engines:
            await engine.dispose()
    assert await advisory_locks(admin, granted=True) == []


async def test_a_singleton_registered_while_leading_starts_at_once(pg_url: str) -> None:
    engine = create_engine(pg_url, pool_size=1)
    elector = PgLeaderElector(engine, interval_s=0.05)
    task = asyncio.create_task(elector.run())
    try:
        await _until(lambda: elector.is_leader, "leads")
        log: list[str] = []
        elector.run_while_leader("lost-node-sweeper", _singleton(log, "sweeper"))
        await _until(lambda: log == ["sweeper started"], "started")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await elector.aclose()
        await engine.dispose()
    assert log == ["sweeper started", "sweeper stopped"]


async def test_sqlite_always_leads(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'hutch.db'}"
    await upgrade_to_head(url)
    engine = create_engine(url)
    leader = open_coordination(engine).leader
    assert isinstance(leader, AlwaysLeader)
    log: list[str] = []
    leader.run_while_leader("reaper", _singleton(log, "reaper"))
    task = asyncio.create_task(leader.run())
    await _until(lambda: log == ["reaper started"], "leads")
    assert leader.is_leader
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert log == ["reaper started", "reaper stopped"]
    await engine.dispose()
