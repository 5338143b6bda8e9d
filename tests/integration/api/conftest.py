"""The real API app in uvicorn (a thread, a free loopback port), on the real SQL store,
with the only fake: ``tests.fakes.node.FakeNodeClient``.

``api`` runs on SQLite; ``api_any_db`` runs each test twice, on SQLite and on a fresh
database of the store tests' private PostgreSQL server.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

from hutch.api.app import create_app
from hutch.api.models import NewTemplate, TemplateBuildState
from hutch.api.settings import ApiSettings
from hutch.api.store.sql import open_sql_store
from hutch.shared.ids import TeamID, TemplateID
from tests.conftest import free_port
from tests.fakes.node import FakeNodeClient
from tests.integration.store.conftest import (  # noqa: F401 - fixtures re-exported
    PostgresDatabases,
    postgres_databases,
    postgres_server_url,
    run_async,
)


@dataclass
class ApiServer:
    """A running API: where it is, its keys, and its fake node."""

    url: str
    key: str
    team_id: TeamID
    other_key: str
    node: FakeNodeClient
    database_url: str
    app: object
    #: An admin key (of team "ops", so the default team's key listings stay as they were).
    admin_key: str = ""


async def _seed(url: str) -> tuple[str, TeamID, str, str]:
    store = await open_sql_store(url, migrate=True)
    try:
        team = await store.teams.ensure_default_team()
        other = await store.teams.create_team(name="other")
        key = await store.keys.create_api_key(team.id, name="test")
        other_key = await store.keys.create_api_key(other.id, name="other")
        ops = await store.teams.create_team(name="ops")
        admin_key = await store.keys.create_api_key(ops.id, name="admin", admin=True)
        for alias, tid, state in (
            ("base", "basetemplate00000001", TemplateBuildState.READY),
            ("busybox", "busyboxtemplate00001", TemplateBuildState.READY),
            ("unbuilt", "unbuilttemplate00001", TemplateBuildState.BUILDING),
        ):
            await store.templates.create_template(
                NewTemplate(
                    team_id=team.id,
                    alias=alias,
                    id=TemplateID(tid),
                    build_state=state,
                    envd_version="0.6.13",
                )
            )
        return key.secret, team.id, other_key.secret, admin_key.secret
    finally:
        await store.close()


def _serve(
    database_url: str, home: Path, *, build_runner: object = None, **settings: object
) -> Iterator[ApiServer]:
    key, team_id, other_key, admin_key = run_async(lambda: _seed(database_url))
    node = FakeNodeClient()
    port = free_port()
    cfg = ApiSettings(
        home=home,
        database_url=database_url,
        api_host="127.0.0.1",
        api_port=port,
        reaper_interval_s=3600,  # tests call reap_once(now) themselves
        usage_interval_s=3600,  # and sample_once(at)
        **settings,  # type: ignore[arg-type]
    )
    app = create_app(cfg, node=node, build_runner=build_runner)  # type: ignore[arg-type]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API server did not start")
        time.sleep(0.01)
    try:
        yield ApiServer(
            url=f"http://127.0.0.1:{port}",
            key=key,
            team_id=team_id,
            other_key=other_key,
            node=node,
            database_url=database_url,
            app=app,
            admin_key=admin_key,
        )
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiServer]:
    """The API on SQLite."""
    yield from _serve(f"sqlite+aiosqlite:///{tmp_path / 'hutch.db'}", tmp_path)


@pytest.fixture(params=["sqlite", "postgres"])
def api_any_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ApiServer]:
    """The API on SQLite, then on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'hutch.db'}"
    else:
        dbs: PostgresDatabases = request.getfixturevalue("postgres_databases")
        url = dbs.create()
    yield from _serve(url, tmp_path)


@pytest.fixture
def sdk_env(api: ApiServer, monkeypatch: pytest.MonkeyPatch) -> ApiServer:
    """The official SDK aimed at ``api`` (E2B_API_URL/E2B_API_KEY)."""
    monkeypatch.setenv("E2B_API_URL", api.url)
    monkeypatch.setenv("E2B_API_KEY", api.key)
    monkeypatch.setenv("E2B_SANDBOX_URL", "http://127.0.0.1:9")  # never contacted here
    monkeypatch.delenv("E2B_DEBUG", raising=False)
    monkeypatch.delenv("E2B_ACCESS_TOKEN", raising=False)
    return api


def reap_now(api: ApiServer, now: object) -> int:
    """Run the app's reaper once at ``now``, in the server's event loop."""
    reaper = api.app.state.reaper  # type: ignore[attr-defined]
    loop = _server_loop(api)
    return asyncio.run_coroutine_threadsafe(reaper.reap_once(now), loop).result(timeout=30)


def _server_loop(api: ApiServer) -> asyncio.AbstractEventLoop:
    loop = api.app.state.loop  # type: ignore[attr-defined]
    assert isinstance(loop, asyncio.AbstractEventLoop)
    return loop
