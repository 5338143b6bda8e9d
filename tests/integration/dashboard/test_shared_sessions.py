"""Two apis on one store (as ``hutch api`` processes behind a load balancer): a session
made by one opens on the other, sealed under the secret they share through the store, and
an api with another secret refuses it."""

from __future__ import annotations

from pathlib import Path

import httpx

from hutch.api.app import create_app
from hutch.api.store.sql import open_sql_store
from hutch.dashboard.app import Dashboard, store_secret
from hutch.dashboard.sessions import COOKIE_NAME
from hutch.dashboard.settings import DashboardSettings
from tests.conftest import free_port
from tests.fakes.node import FakeNodeClient
from tests.integration.api.conftest import _seed
from tests.integration.store.conftest import run_async

from .conftest import api_settings, start_api


def _store_secret(database_url: str):  # type: ignore[no-untyped-def]
    async def read() -> str:
        # The api's own store lives in its lifespan; one more connection reads the row.
        store = await open_sql_store(database_url, migrate=False)
        try:
            return await store_secret(store.secrets)()
        finally:
            await store.close()

    return read


def test_shared_sessions_open_on_every_api_of_one_store(tmp_path: Path) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'hutch.db'}"
    key, *_ = run_async(lambda: _seed(database_url))
    servers, urls = [], []
    for secret in (None, None, "another-secret"):
        port = free_port()
        board = Dashboard(
            DashboardSettings(static_dir=tmp_path / "none", secret=secret),
            secret=_store_secret(database_url),
        )
        app = create_app(api_settings(tmp_path, database_url, port), node=FakeNodeClient(),
                         mounts=board.routes())  # fmt: skip
        servers.append(start_api(app, port))
        urls.append(f"http://127.0.0.1:{port}")
    try:
        first, second, foreign = urls
        signed = httpx.post(f"{first}/dashboard/session", json={"apiKey": key}, timeout=30)
        assert signed.status_code == 200
        cookie = {COOKIE_NAME: signed.cookies[COOKIE_NAME]}
        again = httpx.get(f"{second}/dashboard/session", cookies=cookie, timeout=30)
        assert again.status_code == 200
        assert again.json()["csrfToken"] == signed.json()["csrfToken"]
        listed = httpx.get(f"{second}/dashboard/api/sandboxes", cookies=cookie, timeout=30)
        assert listed.status_code == 200
        refused = httpx.get(f"{foreign}/dashboard/session", cookies=cookie, timeout=30)
        assert refused.status_code == 401
    finally:
        for server in servers:
            server.stop()
