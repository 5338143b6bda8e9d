"""Per-key rate limits (issue 16) through the real API: 429 with an integer
``Retry-After``, per key, and the official SDK retrying after it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2b import Sandbox

from tests.integration.api.conftest import ApiServer, _serve


def _limited(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rate: float) -> Iterator[ApiServer]:
    """The API with ``rate`` requests per second per key, in bursts of 3."""
    gen = _serve(f"sqlite+aiosqlite:///{tmp_path / 'hutch.db'}", tmp_path,
                 rate_limit_per_s=rate, rate_limit_burst=3)  # fmt: skip
    api = next(gen)
    monkeypatch.setenv("E2B_API_URL", api.url)
    monkeypatch.setenv("E2B_API_KEY", api.key)
    monkeypatch.setenv("E2B_SANDBOX_URL", "http://127.0.0.1:9")
    try:
        yield api
    finally:
        gen.close()


@pytest.fixture
def limited(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ApiServer]:
    """1 request per second: the SDK's retry after Retry-After is short."""
    yield from _limited(tmp_path, monkeypatch, 1)


@pytest.fixture
def slow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ApiServer]:
    """1 request per 100 s: no token comes back while a test counts its 200s and 429s,
    however slowly a loaded machine serves them (at 1 per second, a second spent between
    the first and the fourth request refills a token and the fourth is a 200)."""
    yield from _limited(tmp_path, monkeypatch, 0.01)


def test_a_key_over_its_rate_gets_429_with_retry_after(slow: ApiServer) -> None:
    api = slow
    with httpx.Client(base_url=api.url, headers={"X-API-Key": api.key}) as c:
        statuses = [c.get("/v2/sandboxes").status_code for _ in range(4)]
        assert statuses[:3] == [200, 200, 200] and statuses[3] == 429, statuses
        r = c.get("/v2/sandboxes")
        assert r.status_code == 429
        assert r.headers["Retry-After"].isdigit() and int(r.headers["Retry-After"]) >= 1
        assert r.json()["code"] == 429
        assert "Rate limit exceeded: at most 0.01 requests per second" in r.json()["message"]
        assert "Should-Retry" not in r.headers  # the SDK may retry after Retry-After
    # Another key has its own bucket; the bearer routes count too.
    with httpx.Client(base_url=api.url, headers={"X-API-Key": api.other_key}) as other:
        assert other.get("/v2/sandboxes").status_code == 200
    bearer = {"Authorization": f"Bearer {api.other_key}"}
    assert [httpx.get(f"{api.url}/api-keys", headers=bearer).status_code for _ in range(3)] == [
        200,
        200,
        429,
    ]
    # /health needs no key and is never limited.
    assert all(httpx.get(f"{api.url}/health").status_code == 200 for _ in range(10))


def test_the_sdk_retries_after_retry_after(limited: ApiServer) -> None:
    api = limited
    with httpx.Client(base_url=api.url, headers={"X-API-Key": api.key}) as c:
        while c.get("/v2/sandboxes").status_code != 429:
            pass
    # The bucket is empty: the SDK's create gets 429, waits Retry-After, and succeeds.
    sbx = Sandbox.create("base")
    assert sbx.sandbox_id in api.node.running
