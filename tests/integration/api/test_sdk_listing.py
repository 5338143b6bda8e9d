"""The official SDK's listing against the real API, on SQLite and PostgreSQL (issue 18)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from e2b import Sandbox, SandboxQuery

from tests.integration.api.conftest import ApiServer


@pytest.fixture
def sdk_any_db(api_any_db: ApiServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[ApiServer]:
    monkeypatch.setenv("E2B_API_URL", api_any_db.url)
    monkeypatch.setenv("E2B_API_KEY", api_any_db.key)
    monkeypatch.setenv("E2B_SANDBOX_URL", "http://127.0.0.1:9")  # never contacted here
    monkeypatch.delenv("E2B_DEBUG", raising=False)
    yield api_any_db


def _listed(**query: object) -> list[str]:
    return [s.sandbox_id for s in Sandbox.list(query=SandboxQuery(**query)).next_items()]


def test_sdk_started_after_is_inclusive_at_full_precision(sdk_any_db: ApiServer) -> None:
    """``startedAt`` survives the store and the JSON to the microsecond, and feeding it
    back as ``startedAfter`` lists the sandbox; a second later does not (gap 4)."""
    sbx = Sandbox.create("busybox")
    info = sbx.get_info()
    listed = next(s for s in Sandbox.list().next_items() if s.sandbox_id == sbx.sandbox_id)
    assert listed.started_at == info.started_at
    assert sbx.sandbox_id in _listed(started_after=info.started_at)
    assert sbx.sandbox_id not in _listed(started_after=info.started_at + timedelta(seconds=1))
    assert sbx.sandbox_id not in _listed(started_after=info.started_at + timedelta(microseconds=1))


def test_list_x_total_running_counts_every_match_before_pagination(sdk_any_db: ApiServer) -> None:
    """``X-Total-Running``: the running sandboxes that pass the filters, whatever the page
    size; absent when only paused ones are asked for (infra's ``sandboxes_list.go``)."""
    ids = [Sandbox.create("busybox", metadata={"g": "a"}).sandbox_id for _ in range(3)]
    Sandbox.create("busybox", metadata={"g": "b"})
    assert Sandbox.pause(ids[0]) is True
    headers = {"X-API-Key": sdk_any_db.key}
    with httpx.Client(base_url=sdk_any_db.url, headers=headers, timeout=30) as c:

        def total(**params: object) -> str | None:
            r = c.get("/v2/sandboxes", params=params)
            assert r.status_code == 200, r.text
            return r.headers.get("x-total-running")

        assert total() == "3"
        assert total(limit=1) == "3"
        assert total(metadata="g=a") == "2"
        assert total(state="running", metadata="g=a", limit=1) == "2"
        assert total(state="paused") is None
        assert total(template="nope") == "0"
