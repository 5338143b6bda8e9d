"""The real API app with the dashboard mounted, in uvicorn (a thread, a loopback port), on
the real SQLite store, with the only fake the node (``FakeNodeClient``): sessions, CSRF,
cookies and the API bridge, without sandboxes (tests/e2e/test_dashboard.py has those)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

from hutch.api.app import create_app
from hutch.api.settings import ApiSettings
from hutch.dashboard.app import Dashboard
from hutch.dashboard.settings import DashboardSettings
from tests.conftest import free_port
from tests.fakes.node import FakeNodeClient
from tests.integration.api.conftest import _seed
from tests.integration.store.conftest import run_async


@dataclass
class DashboardServer:
    url: str
    key: str
    other_key: str
    admin_key: str
    node: FakeNodeClient
    app: object

    @property
    def host(self) -> str:
        return self.url.removeprefix("http://")


@dataclass
class Running:
    """A uvicorn server in its thread."""

    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def start_api(app: object, port: int) -> Running:
    """``app`` served on loopback ``port`` in a thread, as ``hutch serve`` serves it."""
    server = uvicorn.Server(
        uvicorn.Config(
            app,  # type: ignore[arg-type]
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
            ws="websockets-sansio",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API server did not start")
        time.sleep(0.01)
    return Running(server, thread)


def api_settings(tmp_path: Path, database_url: str, port: int) -> ApiSettings:
    return ApiSettings(
        home=tmp_path, database_url=database_url, api_host="127.0.0.1", api_port=port,
        reaper_interval_s=3600, usage_interval_s=3600,
    )  # fmt: skip


@pytest.fixture
def board(tmp_path: Path) -> Iterator[DashboardServer]:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'hutch.db'}"
    key, _team, other_key, admin_key = run_async(lambda: _seed(database_url))
    node = FakeNodeClient()
    port = free_port()
    static = tmp_path / "static"
    (static / "assets").mkdir(parents=True)
    (static / "index.html").write_text("<!doctype html><title>app</title>")
    (static / "assets" / "app-1234.js").write_text("console.log(1)")

    async def secret() -> str:
        raise AssertionError("the settings' secret wins over the store's")

    dashboard = Dashboard(
        DashboardSettings(static_dir=static, secret="test-secret"),
        secret=secret,
        sandbox_url="http://127.0.0.1:9",  # never reached here: no sandbox exists
    )
    app = create_app(api_settings(tmp_path, database_url, port), node=node,
                     mounts=dashboard.routes())  # fmt: skip
    server = start_api(app, port)
    try:
        yield DashboardServer(
            url=f"http://127.0.0.1:{port}", key=key, other_key=other_key,
            admin_key=admin_key, node=node, app=app,
        )  # fmt: skip
    finally:
        server.stop()
