"""Store tests run on SQLite **and** a real PostgreSQL server.

PostgreSQL is either ``HUTCH_TEST_POSTGRES_DSN`` (an existing server; the role must be
allowed to create databases) or a private throwaway cluster that this file starts for the
session: ``initdb`` into a fresh temporary directory (as the ``postgres`` OS user when run
as root), ``pg_ctl start`` listening on a unix socket in that directory only (no TCP port,
so nothing can collide with another server), stopped and deleted at the end. The system's
own cluster is never touched. Missing binaries fail the session with the apt command that
installs them; there are no skips.

Each database is migrated once per session; every test then gets a fresh engine and the
tables are emptied after it (truncation, not a rolled-back transaction, because the
concurrency tests need many connections that see each other's commits).

``HUTCH_TEST_DB=sqlite`` or ``=postgres`` runs one backend only (local iteration).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from hutch.api.store.engine import create_engine
from hutch.api.store.migrations import upgrade_to_head
from hutch.api.store.sql import SqlStore
from hutch.api.store.tables import ALL_TABLES_CHILDREN_FIRST

APT_PACKAGES = "postgresql-15 (or the distribution's `postgresql`)"
_T = TypeVar("_T")


def run_async(fn: Callable[[], Awaitable[_T]]) -> _T:
    """Run a coroutine from a sync (session) fixture, in its own thread and event loop."""

    async def main() -> _T:
        return await fn()

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, main()).result()


def _pg_bindir() -> Path:
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: int(Path(p).parent.parent.name),
        reverse=True,
    )
    found = shutil.which("pg_ctl")
    for pg_ctl in [*candidates, *([found] if found else [])]:
        bindir = Path(pg_ctl).resolve().parent
        if (bindir / "initdb").exists() and (bindir / "postgres").exists():
            return bindir
    pytest.fail(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; the store tests "
        f"need them: apt-get install -y {APT_PACKAGES}, or set HUTCH_TEST_POSTGRES_DSN",
        pytrace=False,
    )


class _PrivateCluster:
    """A throwaway PostgreSQL cluster in a temporary directory, reachable by unix socket."""

    def __init__(self) -> None:
        self.bindir = _pg_bindir()
        self.base = Path(tempfile.mkdtemp(prefix="hutch-test-pg-"))
        self.data = self.base / "data"
        self.socket_dir = self.base / "run"
        self.log = self.base / "postgres.log"
        self._user: str | None = None
        if os.geteuid() == 0:
            # initdb refuses to run as root.
            self._user = "postgres"
            try:
                pw = pwd.getpwnam(self._user)
            except KeyError:
                pytest.fail(
                    "running as root but there is no `postgres` OS user to run the test "
                    f"cluster as: apt-get install -y {APT_PACKAGES}",
                    pytrace=False,
                )
            self.socket_dir.mkdir()
            for path in (self.base, self.socket_dir):
                os.chown(path, pw.pw_uid, pw.pw_gid)
        else:
            self.socket_dir.mkdir()

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            user=self._user,
            cwd=self.base,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def start(self) -> str:
        init = self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
            "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{init.stdout}\n{init.stderr}")
        options = " ".join(
            [
                "-c listen_addresses=''",
                f"-c unix_socket_directories={self.socket_dir}",
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off",
                "-c max_connections=200",
            ]
        )
        started = self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start"
        )
        if started.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed:\n{started.stdout}\n{started.stderr}\n{log}")
        return f"postgresql+asyncpg://postgres@/postgres?host={self.socket_dir}"

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        pid = self._postmaster_pid()
        if pid is not None:
            stopped = self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
            if stopped.returncode != 0:
                # Only the postmaster we started, by its PID.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A URL to a PostgreSQL server where the tests may create databases."""
    dsn = os.environ.get("HUTCH_TEST_POSTGRES_DSN")
    if dsn:
        url = make_url(dsn)
        yield url.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
        return
    cluster = _PrivateCluster()
    try:
        yield cluster.start()
    finally:
        cluster.stop()


async def _admin(server_url: str, statement: str) -> None:
    engine = create_engine(server_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


class PostgresDatabases:
    """Creates fresh databases on the test server (and drops them at session end)."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self._created: list[str] = []

    def create(self) -> str:
        """A new empty database; returns its URL."""
        name = f"hutch_test_{uuid.uuid4().hex[:12]}"
        run_async(lambda: _admin(self.server_url, f'CREATE DATABASE "{name}"'))
        self._created.append(name)
        return make_url(self.server_url).set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        statements = [f'DROP DATABASE IF EXISTS "{name}"' for name in self._created]

        async def drop() -> None:
            for statement in statements:
                await _admin(self.server_url, statement)

        run_async(drop)


@pytest.fixture(scope="session")
def postgres_databases(postgres_server_url: str) -> Iterator[PostgresDatabases]:
    """Factory of empty PostgreSQL databases for this session."""
    dbs = PostgresDatabases(postgres_server_url)
    try:
        yield dbs
    finally:
        dbs.drop_all()


@pytest.fixture(scope="session")
def postgres_db_url(postgres_databases: PostgresDatabases) -> str:
    """The session's migrated PostgreSQL database."""
    url = postgres_databases.create()
    run_async(lambda: upgrade_to_head(url))
    return url


@pytest.fixture(scope="session")
def sqlite_db_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The session's migrated SQLite database (a file: WAL needs one)."""
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sqlite') / 'hutch.db'}"
    run_async(lambda: upgrade_to_head(url))
    return url


def _backends() -> list[str]:
    only = os.environ.get("HUTCH_TEST_DB", "")
    return [only] if only in ("sqlite", "postgres") else ["sqlite", "postgres"]


@pytest.fixture(params=_backends())
def backend(request: pytest.FixtureRequest) -> str:
    """``"sqlite"`` or ``"postgres"``: every test that uses the store runs on both."""
    return str(request.param)


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest) -> str:
    """The migrated database of the current backend."""
    return str(request.getfixturevalue(f"{backend}_db_url"))


async def _empty(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            names = ", ".join(t.name for t in ALL_TABLES_CHILDREN_FIRST)
            await conn.execute(text(f"TRUNCATE {names} CASCADE"))
        else:
            for table in ALL_TABLES_CHILDREN_FIRST:
                await conn.execute(table.delete())


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    """A fresh engine on the migrated database; the tables are emptied afterwards."""
    eng = create_engine(db_url, pool_size=25)
    try:
        yield eng
    finally:
        await _empty(eng)
        await eng.dispose()


@pytest.fixture
def store(engine: AsyncEngine) -> SqlStore:
    """Every SQL store over the test engine."""
    return SqlStore.on(engine)


@pytest.fixture
async def team_id(store: SqlStore) -> Any:
    """A fresh team's id."""
    return (await store.teams.create_team(name="team-a")).id
