"""The per-sandbox lock across api processes (PostgreSQL advisory locks, ADR 0024), and the
in-process one SQLite keeps: serialisation, cancellation, a dead process, the bounded wait."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from hutch.api.models import SandboxState
from hutch.api.service.locks import SandboxLocks
from hutch.api.store.coordination import open_coordination
from hutch.api.store.locks import PgSandboxLocks
from hutch.api.store.migrations import upgrade_to_head
from hutch.api.store.sql import open_sql_store
from hutch.shared.errors import ConflictError, NotFoundError, UnavailableError

from .conftest import (
    RecordingNode,
    advisory_locks,
    open_api,
    running_sandbox,
    terminate,
    wait_for_advisory,
)


async def test_two_apis_serialize_pause_kill_and_patch_of_one_sandbox(
    pg_url: str, admin: AsyncEngine
) -> None:
    node = RecordingNode()
    node.pause_gate = asyncio.Event()
    a, b = await open_api(pg_url, node), await open_api(pg_url, node)
    try:
        team = await a.store.teams.ensure_default_team()
        sid = await running_sandbox(a.store, node, team.id)
        # api A pauses; the node holds the pause until the gate opens.
        pause = asyncio.create_task(a.pausing.pause(team_id=team.id, sandbox_id=sid))
        await wait_for_advisory(admin, granted=True, count=1)
        # api B patches and kills meanwhile: B's first caller waits in PostgreSQL for A's
        # lock, its second queues in B's process behind it (one connection per sandbox).
        patch = asyncio.create_task(
            b.metadata.patch_metadata(team_id=team.id, sandbox_id=sid, patch={"b": "2"})
        )
        await wait_for_advisory(admin, granted=False, count=1)
        kill = asyncio.create_task(b.sandboxes.kill_sandbox(team_id=team.id, sandbox_id=sid))
        await asyncio.sleep(0.05)
        assert node.events == [("enter", "pause")]  # nobody reached the node meanwhile
        node.pause_gate.set()
        paused = await pause
        assert paused.state is SandboxState.PAUSED
        patched, killed = await asyncio.gather(patch, kill, return_exceptions=True)
        # The kill waited for the pause and then killed the paused sandbox (without the
        # lock across processes it would have met 'pausing' and answered not found).
        assert not isinstance(killed, BaseException), killed
        assert killed.state is SandboxState.KILLED
        # The patch ran after the pause: a paused or killed sandbox takes no patch.
        assert isinstance(patched, ConflictError | NotFoundError), patched
        assert node.overlap == 1
        assert node.events[:2] == [("enter", "pause"), ("exit", "pause")]
        assert ("enter", "kill") in node.events
        assert await advisory_locks(admin, granted=True) == []
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_task_cancelled_while_holding_the_lock_releases_it(
    pg_url: str, admin: AsyncEngine
) -> None:
    a = open_coordination(await _engine(pg_url), lock_wait_s=10).locks
    b = open_coordination(await _engine(pg_url), lock_wait_s=10).locks
    inside = asyncio.Event()

    async def hold_forever() -> None:
        async with a.hold("sbxcancelled"):
            inside.set()
            await asyncio.Event().wait()

    holder = asyncio.create_task(hold_forever())
    await inside.wait()
    waiter = asyncio.create_task(_enter_and_leave(b, "sbxcancelled"))
    await wait_for_advisory(admin, granted=False, count=1)
    holder.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await holder
    await asyncio.wait_for(waiter, 10)  # B got in once A's task was cancelled
    assert await advisory_locks(admin, granted=True) == []
    await _close(a, b)


async def test_a_task_cancelled_while_waiting_leaves_no_lock_behind(
    pg_url: str, admin: AsyncEngine
) -> None:
    a = open_coordination(await _engine(pg_url), lock_wait_s=10).locks
    b = open_coordination(await _engine(pg_url), lock_wait_s=10).locks
    async with a.hold("sbxwaiting"):
        waiter = asyncio.create_task(_enter_and_leave(b, "sbxwaiting"))
        await wait_for_advisory(admin, granted=False, count=1)
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiter
        # The waiting session was ended, not pooled: no queued request can take the lock
        # later on behalf of nobody.
        assert await advisory_locks(admin, granted=False) == []
    assert await advisory_locks(admin, granted=True) == []
    await asyncio.wait_for(_enter_and_leave(b, "sbxwaiting"), 10)  # B's family still works
    await _close(a, b)


async def test_a_dead_api_process_releases_its_locks(pg_url: str, admin: AsyncEngine) -> None:
    a = open_coordination(await _engine(pg_url), lock_wait_s=10).locks
    b = open_coordination(await _engine(pg_url), lock_wait_s=10).locks
    inside, finish = asyncio.Event(), asyncio.Event()

    async def hold_until_told() -> None:
        async with a.hold("sbxdead"):
            inside.set()
            await finish.wait()

    holder = asyncio.create_task(hold_until_told())
    await inside.wait()
    [pid] = await advisory_locks(admin, granted=True)
    waiter = asyncio.create_task(_enter_and_leave(b, "sbxdead"))
    await wait_for_advisory(admin, granted=False, count=1)
    await terminate(admin, pid)  # what PostgreSQL does when A's process dies
    await asyncio.wait_for(waiter, 10)
    finish.set()
    await asyncio.wait_for(holder, 10)  # A's unlock fails quietly: its session is gone
    assert await advisory_locks(admin, granted=True) == []
    await asyncio.wait_for(_enter_and_leave(a, "sbxdead"), 10)  # A's family recovers
    await _close(a, b)


async def test_a_wait_past_the_bound_is_a_retryable_503(pg_url: str) -> None:
    a = open_coordination(await _engine(pg_url), lock_wait_s=10).locks
    b = open_coordination(await _engine(pg_url), lock_wait_s=0.3).locks
    async with a.hold("sbxbusy"):
        with pytest.raises(UnavailableError) as caught:
            await _enter_and_leave(b, "sbxbusy")
    assert caught.value.error_code == "sandbox_busy"
    assert caught.value.retryable
    assert "sbxbusy" in caught.value.public_message
    await _enter_and_leave(b, "sbxbusy")
    await _close(a, b)


async def test_sqlite_keeps_the_in_process_lock_with_the_same_bound(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'hutch.db'}"
    await upgrade_to_head(url)
    store = await open_sql_store(url)
    coordination = open_coordination(store.engine, lock_wait_s=0.2)
    assert isinstance(coordination.locks, SandboxLocks)
    async with coordination.locks.hold("sbx1"):
        with pytest.raises(UnavailableError, match="busy"):
            await _enter_and_leave(coordination.locks, "sbx1")
        await _enter_and_leave(coordination.locks, "sbx2")  # other sandboxes are free
    await _enter_and_leave(coordination.locks, "sbx1")
    assert not coordination.locks.held("sbx1")
    await coordination.aclose()
    await store.close()


async def _enter_and_leave(locks: object, sandbox_id: str) -> None:
    async with locks.hold(sandbox_id):  # type: ignore[attr-defined]
        pass


_engines: list[AsyncEngine] = []


async def _engine(url: str) -> AsyncEngine:
    from hutch.api.store.engine import create_engine

    engine = create_engine(url, pool_size=2)
    _engines.append(engine)
    return engine


async def _close(*families: object) -> None:
    for family in families:
        assert isinstance(family, PgSandboxLocks)
        await family.aclose()
    while _engines:
        await _engines.pop().dispose()
