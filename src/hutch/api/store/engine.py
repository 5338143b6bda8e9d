"""Async engines for SQLite (embedded default) and PostgreSQL (scale-out).

SQLite is opened in WAL mode (readers never block the writer), with a busy timeout, foreign
keys on, and **explicit transaction control**: Python's sqlite3 module would otherwise
start transactions lazily and upgrade a read lock to a write lock mid-transaction, which
fails at once with ``SQLITE_BUSY`` under concurrency regardless of the busy timeout. Every
write transaction therefore starts with ``BEGIN IMMEDIATE`` (see :func:`write_transaction`),
which takes the single writer lock up front and queues behind other writers for up to the
busy timeout. That is SQLite's equivalent of PostgreSQL's ``SELECT ... FOR UPDATE``.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from hutch.api import metrics

_VERBS: Final = frozenset({"select", "insert", "update", "delete"})
#: How long a SQLite writer waits for the lock before failing (milliseconds).
SQLITE_BUSY_TIMEOUT_MS: Final = 30_000

#: The database file's name under the hutch home directory.
SQLITE_FILENAME: Final = "hutch.db"

_BEGIN_OPTION: Final = "hutch_sqlite_begin"


def default_database_url(home: Path) -> str:
    """The embedded default: ``sqlite+aiosqlite:///<home>/hutch.db``."""
    return f"sqlite+aiosqlite:///{Path(home).resolve() / SQLITE_FILENAME}"


def is_sqlite(engine_or_conn: AsyncEngine | AsyncConnection) -> bool:
    """Whether the engine or connection talks to SQLite."""
    return engine_or_conn.dialect.name == "sqlite"


def create_engine(url: str, *, echo: bool = False, pool_size: int = 10) -> AsyncEngine:
    """An :class:`AsyncEngine` for ``url`` with hutch's connection settings.

    ``url`` is a SQLAlchemy URL: ``sqlite+aiosqlite:///path`` or
    ``postgresql+asyncpg://user:pass@host/db`` (``?host=/socket/dir`` for a unix socket).
    Plain ``sqlite://`` and ``postgresql://`` are accepted and given the async driver.
    """
    parsed = make_url(url)
    if parsed.drivername in ("sqlite", "sqlite+pysqlite"):
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+asyncpg")

    if parsed.get_backend_name() == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            # Every pooled connection would get its own empty database.
            raise ValueError("in-memory SQLite is not supported; give the store a file")
        engine = create_async_engine(
            parsed, echo=echo, pool_size=pool_size, max_overflow=2 * pool_size
        )
        _configure_sqlite(engine)
        _time_statements(engine)
        return engine
    engine = create_async_engine(
        parsed, echo=echo, pool_size=pool_size, max_overflow=2 * pool_size, pool_pre_ping=True
    )
    _time_statements(engine)
    return engine


def _time_statements(engine: AsyncEngine) -> None:
    """Every statement's latency into ``hutch_store_query_duration_seconds`` by its verb,
    and the engine's pool into ``hutch_store_pool_connections``."""
    metrics.watch_pool(engine.sync_engine.pool)

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        conn.info.setdefault("hutch_started", []).append(time.perf_counter())

    @event.listens_for(engine.sync_engine, "after_cursor_execute")
    def after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        started = conn.info.get("hutch_started")
        if not started:
            return
        verb = statement.lstrip().split(None, 1)[0].lower() if statement.strip() else "other"
        if verb not in _VERBS:
            verb = "other"
        metrics.STORE_SECONDS.labels(verb).observe(time.perf_counter() - started.pop())


def _configure_sqlite(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module (SQLAlchemy's documented
        # recipe for serializable SQLite); "begin" below emits BEGIN ourselves.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        finally:
            cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


@asynccontextmanager
async def write_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction that will write: committed on success, rolled back on error.

    On SQLite it starts with ``BEGIN IMMEDIATE``, so writers are serialised from their
    first statement (no lock upgrades, no ``SQLITE_BUSY`` mid-transaction). On PostgreSQL
    it is a plain READ COMMITTED transaction; code that reads-then-writes a row locks it
    with ``SELECT ... FOR UPDATE``.
    """
    if not is_sqlite(engine):
        async with engine.connect() as conn, conn.begin():
            yield conn
        return
    # Writers of this process queue on an asyncio lock first: SQLite's own busy handler
    # polls with sleeps of up to 100 ms, which made 20 concurrent patches take ~1.3 s
    # (docs/store.md); the lock hands over in FIFO order at once. Other processes sharing
    # the file are still serialised by BEGIN IMMEDIATE and the busy timeout.
    async with _sqlite_writer_lock(engine), engine.connect() as conn:
        await conn.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
        async with conn.begin():
            yield conn


_WRITER_LOCKS: weakref.WeakKeyDictionary[Engine, asyncio.Lock] = weakref.WeakKeyDictionary()


def _sqlite_writer_lock(engine: AsyncEngine) -> asyncio.Lock:
    lock = _WRITER_LOCKS.get(engine.sync_engine)
    if lock is None:
        lock = _WRITER_LOCKS[engine.sync_engine] = asyncio.Lock()
    return lock


@asynccontextmanager
async def read_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A read-only transaction that sees one consistent snapshot on both databases.

    SQLite's deferred transaction is a snapshot already (WAL); on PostgreSQL the
    transaction runs at REPEATABLE READ so that, e.g., a sandbox row and its metadata rows
    read by two statements always belong together.
    """
    async with engine.connect() as conn:
        if not is_sqlite(conn):
            await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            yield conn
