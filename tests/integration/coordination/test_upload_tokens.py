"""The template upload-token key is the store's (or the settings'), not one process's: an
upload URL minted by one api is accepted by another on the same PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn

from hutch.api.app import create_app, upload_secret
from hutch.api.settings import ApiSettings
from hutch.api.store.sql import open_sql_store
from tests.conftest import free_port
from tests.fakes.node import FakeNodeClient
from tests.integration.api.conftest import _seed
from tests.integration.api.test_template_builds import FakeBuildRunner

from .conftest import PostgresDatabases, run_async


@contextmanager
def _api(url: str, home: Path, runner: FakeBuildRunner) -> Iterator[str]:
    port = free_port()
    cfg = ApiSettings(home=home, database_url=url, api_host="127.0.0.1", api_port=port,
                      reaper_interval_s=3600, usage_interval_s=3600)  # fmt: skip
    app = create_app(cfg, node=FakeNodeClient(), build_runner=runner)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_an_upload_url_minted_by_one_api_is_accepted_by_another(
    postgres_databases: PostgresDatabases, tmp_path: Path
) -> None:
    url = postgres_databases.create()
    key, _team, _other, _admin = run_async(lambda: _seed(url))
    runner = FakeBuildRunner()
    with (
        _api(url, tmp_path / "a", runner) as api_a,
        _api(url, tmp_path / "b", runner) as api_b,
    ):
        path = "/templates/basetemplate00000001/files/abcdef0123456789"
        link = httpx.get(f"{api_a}{path}", headers={"X-API-Key": key})
        assert link.status_code == 201, link.text
        minted = link.json()["url"]
        assert minted.startswith(api_a)
        on_b = minted.replace(api_a, api_b)
        put = httpx.put(on_b, content=b"archive bytes")
        assert put.status_code == 200, put.text
        assert runner.files == {"abcdef0123456789": b"archive bytes"}
        # A forged token is refused by both.
        forged = on_b.split("token=")[0] + "token=" + "0" * 64
        assert httpx.put(forged, content=b"x").status_code == 401
        assert httpx.put(forged.replace(api_b, api_a), content=b"x").status_code == 401


def test_concurrent_first_apis_agree_on_one_key_and_the_settings_key_wins(
    postgres_databases: PostgresDatabases, tmp_path: Path
) -> None:
    url = postgres_databases.create()
    run_async(lambda: _seed(url))

    async def keys() -> list[bytes]:
        stores = [await open_sql_store(url) for _ in range(4)]
        try:
            settings = ApiSettings(home=tmp_path, database_url=url)
            return list(await asyncio.gather(*(upload_secret(s, settings) for s in stores)))
        finally:
            for store in stores:
                await store.close()

    first, again = run_async(keys), run_async(keys)
    assert len(set(first)) == 1 and len(first[0]) == 64
    assert again == first  # kept in the store across restarts

    async def from_settings() -> bytes:
        store = await open_sql_store(url)
        try:
            settings = ApiSettings(home=tmp_path, database_url=url, template_upload_secret="k1")
            return await upload_secret(store, settings)
        finally:
            await store.close()

    assert run_async(from_settings) == b"k1"
