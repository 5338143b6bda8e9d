"""Schema migrations (Alembic), run programmatically.

* :func:`upgrade_to_head` brings a database to this build's head (``hutch migrate``, and
  ``hutch serve`` on its embedded SQLite). On PostgreSQL it holds an advisory lock, so that
  several API instances starting at once migrate one after the other.
* :func:`check_schema_head` refuses to run against a database at any other head, like e2b's
  ``expectedMigrationTimestamp``: an old API must not write into a newer schema, nor a new
  API into an old one.

A new migration goes in ``versions/`` with the next number as its revision, and
:data:`EXPECTED_HEAD` moves to it in the same change (a unit test checks they agree).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from hutch.api.store.engine import create_engine
from hutch.api.store.errors import SchemaMismatchError

#: The migration head this build of hutch was written for.
EXPECTED_HEAD: Final = "0022"

# Any constant; identifies "hutch is migrating" among PostgreSQL advisory locks.
_PG_MIGRATION_LOCK: Final = 0x68757463  # "hutc"

_HERE: Final = Path(__file__).resolve().parent


def alembic_config() -> Config:
    """An Alembic :class:`Config` pointing at these migrations (no ``alembic.ini``)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    return cfg


def code_heads() -> tuple[str, ...]:
    """The head revision(s) of the migration scripts shipped with this build."""
    return tuple(ScriptDirectory.from_config(alembic_config()).get_heads())


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


def _db_heads(connection: Connection) -> tuple[str, ...]:
    return tuple(MigrationContext.configure(connection).get_current_heads())


async def upgrade_engine_to_head(engine: AsyncEngine) -> None:
    """Run every pending migration on ``engine``'s database, in one transaction."""
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)


async def upgrade_to_head(url: str) -> None:
    """Run every pending migration on the database at ``url``."""
    engine = create_engine(url, pool_size=1)
    try:
        await upgrade_engine_to_head(engine)
    finally:
        await engine.dispose()


async def database_heads(engine: AsyncEngine) -> tuple[str, ...]:
    """The revision(s) the database is at (empty for a database never migrated)."""
    async with engine.connect() as conn:
        return await conn.run_sync(_db_heads)


async def check_schema_head(engine: AsyncEngine) -> None:
    """Raise :class:`SchemaMismatchError` unless the database is at :data:`EXPECTED_HEAD`."""
    found = await database_heads(engine)
    if found == (EXPECTED_HEAD,):
        return
    shown = ", ".join(found) if found else "none (never migrated)"
    raise SchemaMismatchError(
        f"database schema is at revision {shown}, this hutch expects {EXPECTED_HEAD}; "
        "run `hutch migrate` (or use the hutch version that migrated this database)",
        public_message="the database schema does not match this version of hutch",
    )
