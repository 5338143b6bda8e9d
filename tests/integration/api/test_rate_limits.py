"""Per-key rate limits (issue 16) through the real API: 429 with an integer
``Retry-After``, per key, and the official SDK retrying after it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2b import Sandbox

from tests.integration.api.conftest import ApiServer, _serve


@pytest.fixture
def limited(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ApiServer]:
    """The API with 1 request per second per key, in bursts of 3."""
    gen = _serve(f"sqlite+aiosqlite:///{tmp_path / 'hutch.db'}", tmp_path,
                 rate_limit_per_s=1, rate_limit_burst=3)  # fmt: skip
    api = next(gen)
    monkeypatch.setenv("E2B_API_URL", api.url)
    monkeypatch.setenv("E2B_API_KEY", api.key)
    monkeypatch.setenv("E2B_SANDBOX_URL", "http://127.0.0.1:9")
    try:
        yield api
    finally:
        gen.close()


def test_a_key_over_its_rate_gets_429_with_retry_after(limited: ApiServer) -> None:
    api = limited
    with httpx.Client(base_url=api.url, headers={"X-API-Key": api.key}) as c:
        statuses = [c.get("/v2/sandboxes").status_code for _ in range(4)]
        assert statuses[:3] == [200, 200, 200] and statuses[3] == 429, statuses
        r = c.get("/v2/sandboxes")
        assert r.status_code == 429
        assert r.headers["Retry-After"].isdigit() and int(r.headers["Retry-After"]) >= 1
        assert r.json()["code"] == 429
        assert "Rate limit exceeded: at most 1 requests per second" in r.json()["message"]
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
