"""The retention sweep of the SDK's build archives (``store/build_files.py``, ADR 0037) on
real SQLite and PostgreSQL: archives unused for the retention go unless an unfinished build
names them; a "present" answer keeps one a whole retention more; an SDK told "present"
never finds its archive gone, however its check and a sweep interleave."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import func, select, update

from hutch.api.store.base import utc_now
from hutch.api.store.engine import create_engine
from hutch.api.store.sql import SqlStore, open_sql_store
from hutch.api.store.tables import UTCDateTime, build_file_chunks, build_files
from tests.integration.store.conftest import run_async

HOUR = 3600.0


def _hash(n: int) -> str:
    return f"{n:064x}"


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _backdate(store: SqlStore, *hashes: str, hours: float = 2) -> None:
    """As if the archives were last used ``hours`` ago (the store's clock cannot be moved
    on PostgreSQL: it is the server's ``now()``)."""
    async with store.engine.begin() as conn:
        await conn.execute(
            update(build_files)
            .where(build_files.c.files_hash.in_(hashes))
            .values(used_at=utc_now() - timedelta(hours=hours))
        )


async def _chunk_rows(store: SqlStore, files_hash: str) -> int:
    async with store.engine.connect() as conn:
        found = await conn.execute(
            select(func.count()).where(build_file_chunks.c.files_hash == files_hash)
        )
        return int(found.scalar_one())


async def _build(store: SqlStore, team_id: Any, files_hash: str, *, status: str) -> str:
    """A build whose start request's ``COPY`` names ``files_hash``, left ``status``."""
    build_id = str(uuid.uuid4())
    await store.builds.add_build(
        build_id=build_id, template_id=f"tpl-{build_id[:8]}", team_id=team_id, cpu_count=1,
        memory_mb=256, first=True, tags=(),
    )  # fmt: skip
    start = {"fromTemplate": "base", "steps": [
        {"type": "COPY", "args": ["a", "/a", "", ""], "filesHash": files_hash, "force": False},
    ]}  # fmt: skip
    await store.builds.start(build_id, start)
    if status != "building":
        assert await store.builds.finish(build_id, status=status, worker=None)
    return build_id


async def test_the_sweep_takes_unused_archives_and_keeps_used_and_named_ones(
    store: SqlStore, team_id: Any
) -> None:
    unused, asked, building, built, failed, fresh = (_hash(n) for n in range(1, 7))
    for h in (unused, asked, building, built, failed, fresh):
        await store.build_files.put(h, _chunks(b"x" * 1000))
    await _backdate(store, unused, asked, building, built, failed)
    await _build(store, team_id, building, status="building")
    await _build(store, team_id, built, status="ready")
    await _build(store, team_id, failed, status="error")
    # The SDK asks about ``asked`` before a build: "present", and kept a retention more.
    assert await store.build_files.has(asked)

    assert await store.build_files.sweep(HOUR) == sorted([unused, built, failed])

    for h in (unused, built, failed):
        assert not await store.build_files.has(h)
        assert await _chunk_rows(store, h) == 0
    for h in (asked, building, fresh):
        assert await store.build_files.has(h)
        assert b"".join([c async for c in store.build_files.read(h)]) == b"x" * 1000
    # Nothing is old now: a second sweep takes nothing; an upload again is whole.
    assert await store.build_files.sweep(HOUR) == []
    await store.build_files.put(unused, _chunks(b"y" * 10))
    assert b"".join([c async for c in store.build_files.read(unused)]) == b"y" * 10


async def test_an_upload_again_of_a_kept_archive_counts_as_a_use(store: SqlStore) -> None:
    h = _hash(9)
    await store.build_files.put(h, _chunks(b"z"))
    await _backdate(store, h)
    await store.build_files.put(h, _chunks(b"z"))  # the SDK's forceUpload
    assert await store.build_files.sweep(HOUR) == []
    assert await store.build_files.has(h)


async def test_an_sdk_told_present_never_loses_the_archive_to_a_concurrent_sweep(
    store: SqlStore,
) -> None:
    """Each "exists?" races a sweep: whatever the order, an archive the SDK was told is
    present is there afterwards (and the ones it was told are absent are gone)."""
    hashes = [_hash(100 + n) for n in range(40)]
    for h in hashes:
        await store.build_files.put(h, _chunks(h.encode()))
    await _backdate(store, *hashes)

    async def ask(h: str) -> bool:
        await asyncio.sleep(0)
        return await store.build_files.has(h)

    answers = await asyncio.gather(
        *(ask(h) for h in hashes[:20]),
        store.build_files.sweep(HOUR),
        *(ask(h) for h in hashes[20:]),
    )
    swept = answers.pop(20)
    told = dict(zip(hashes, answers, strict=True))
    for h, present in told.items():
        assert await store.build_files.has(h) is present, h
        assert (h in swept) is not present, h


def _migrate(url: str, revision: str) -> None:
    from alembic import command

    from hutch.api.store.migrations import alembic_config

    async def run() -> None:
        engine = create_engine(url, pool_size=1)
        try:
            async with engine.begin() as conn:

                def up(sync_conn: Any) -> None:
                    cfg = alembic_config()
                    cfg.attributes["connection"] = sync_conn
                    command.upgrade(cfg, revision)

                await conn.run_sync(up)
        finally:
            await engine.dispose()

    run_async(run)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_migration_0022_gives_the_archives_kept_their_upload_time(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'h.db'}"
    else:
        url = request.getfixturevalue("postgres_databases").create()
    _migrate(url, "0021")
    uploaded = utc_now() - timedelta(days=3)

    async def insert() -> None:
        # The table as 0021 had it (no ``used_at``), through an engine that checks no head.
        old_table = sa.table(
            "build_files", sa.column("files_hash"), sa.column("size"), sa.column("chunks"),
            sa.column("created_at", UTCDateTime()),
        )  # fmt: skip
        engine = create_engine(url, pool_size=1)
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    old_table.insert().values(
                        files_hash=_hash(7), size=1, chunks=1, created_at=uploaded
                    )
                )
        finally:
            await engine.dispose()

    run_async(insert)
    _migrate(url, "head")

    async def read() -> Any:
        store = await open_sql_store(url)
        try:
            async with store.engine.connect() as conn:
                row = (await conn.execute(select(build_files.c.used_at))).one()
            return row.used_at, await store.build_files.sweep(86_400.0)
        finally:
            await store.close()

    used_at, swept = run_async(read)
    assert used_at == uploaded and swept == [_hash(7)]
