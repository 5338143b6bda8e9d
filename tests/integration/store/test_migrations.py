"""Migrations from an empty database, the schema they build, and the start-up head check."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from hutch.api.store.engine import create_engine
from hutch.api.store.errors import SchemaMismatchError
from hutch.api.store.migrations import (
    EXPECTED_HEAD,
    check_schema_head,
    database_heads,
    upgrade_to_head,
)
from hutch.api.store.sql import open_sql_store
from hutch.api.store.tables import metadata

from .conftest import PostgresDatabases


@pytest.fixture
def empty_db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Callable[[], str]:
    """A factory of fresh, empty databases of the current backend."""
    if backend == "sqlite":
        counter = iter(range(1_000))
        return lambda: f"sqlite+aiosqlite:///{tmp_path / f'db{next(counter)}.db'}"
    dbs: PostgresDatabases = request.getfixturevalue("postgres_databases")
    return dbs.create


async def test_migrations_run_from_empty_and_match_tables(
    empty_db_url: Callable[[], str],
) -> None:
    url = empty_db_url()
    engine = create_engine(url)
    try:
        assert await database_heads(engine) == ()
        with pytest.raises(SchemaMismatchError, match="never migrated"):
            await check_schema_head(engine)
        await upgrade_to_head(url)
        assert await database_heads(engine) == (EXPECTED_HEAD,)
        await check_schema_head(engine)
        # Running again is a no-op.
        await upgrade_to_head(url)
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda c: compare_metadata(
                    MigrationContext.configure(c, opts={"compare_type": True}), metadata
                )
            )
        assert diff == [], f"migrations and tables.py disagree: {diff}"
    finally:
        await engine.dispose()


async def test_migrations_head_check_refuses_another_head(
    empty_db_url: Callable[[], str],
) -> None:
    url = empty_db_url()
    await upgrade_to_head(url)
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        with pytest.raises(SchemaMismatchError, match="9999") as info:
            await check_schema_head(engine)
        assert EXPECTED_HEAD in info.value.message
    finally:
        await engine.dispose()
    with pytest.raises(SchemaMismatchError):
        await open_sql_store(url)


async def test_migrations_open_sql_store_migrates_when_asked(
    empty_db_url: Callable[[], str],
) -> None:
    url = empty_db_url()
    with pytest.raises(SchemaMismatchError):
        await open_sql_store(url)
    store = await open_sql_store(url, migrate=True)
    try:
        team = await store.teams.ensure_default_team()
        key = await store.keys.create_api_key(team.id)
        assert await store.keys.get_team_by_api_key(key.secret) == team
    finally:
        await store.close()
    reopened = await open_sql_store(url)
    await reopened.close()
