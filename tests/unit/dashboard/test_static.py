"""The app's files (``hutch.dashboard.static``): the placeholder without a build, the app's
fallback, assets, and nothing outside ``static/``."""

from __future__ import annotations

from pathlib import Path

import httpx
from starlette.applications import Starlette

from hutch.api.http.errors import EXCEPTION_HANDLERS
from hutch.dashboard.app import Dashboard
from hutch.dashboard.security import APP_CSP
from hutch.dashboard.settings import DashboardSettings
from hutch.dashboard.static import PLACEHOLDER


async def _no_secret() -> str:
    raise AssertionError("pages need no session")


def _client(static: Path) -> httpx.AsyncClient:
    board = Dashboard(DashboardSettings(static_dir=static), secret=_no_secret)
    app = Starlette(routes=board.routes(), exception_handlers=dict(EXCEPTION_HANDLERS))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_static_placeholder_without_a_build(tmp_path: Path) -> None:
    async with _client(tmp_path / "missing") as client:
        page = await client.get("/dashboard/")
        assert page.status_code == 200 and page.text == PLACEHOLDER
        assert page.headers["content-security-policy"] == APP_CSP
        assert "<script" not in page.text and "style=" not in page.text
        assert (await client.get("/dashboard/assets/x.js")).status_code == 404


async def test_static_serves_files_and_falls_back_to_the_app(tmp_path: Path) -> None:
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text("app")
    (tmp_path / "assets" / "a-1.js").write_text("js")
    (tmp_path.parent / "secret.txt").write_text("secret")
    async with _client(tmp_path) as client:
        assert (await client.get("/dashboard")).text == "app"
        assert (await client.get("/dashboard/sandboxes/i123")).text == "app"
        asset = await client.get("/dashboard/assets/a-1.js")
        assert asset.text == "js" and "immutable" in asset.headers["cache-control"]
        assert (await client.get("/dashboard/index.html")).headers["cache-control"] == "no-cache"
        missing = await client.get("/dashboard/assets/b-2.css")
        assert missing.status_code == 404 and missing.json()["code"] == 404
        for path in ("/dashboard/../secret.txt", "/dashboard/%2e%2e/secret.txt",
                     "/dashboard/..%2fsecret.txt"):  # fmt: skip
            assert (await client.get(path)).text != "secret", path
        assert (await client.post("/dashboard")).status_code == 405
