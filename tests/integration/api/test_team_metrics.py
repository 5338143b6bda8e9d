"""``GET /teams/{teamID}/metrics`` (E2B's ``TeamMetric`` series) and the live use beside the
quotas (issue 16), through the real API with the sampler run by hand."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.integration.api.conftest import ApiServer


def _sample(api: ApiServer, at: datetime) -> None:
    usage = api.app.state.ctx.usage  # type: ignore[attr-defined]
    loop = api.app.state.loop  # type: ignore[attr-defined]
    asyncio.run_coroutine_threadsafe(usage.sample_once(at), loop).result(timeout=30)


def test_series_counts_concurrent_sandboxes_and_starts(api_any_db: ApiServer) -> None:
    api = api_any_db
    h = {"X-API-Key": api.key}
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
    _sample(api, t0)  # nothing yet
    ids = [
        httpx.post(f"{api.url}/sandboxes", json={"templateID": "base"}, headers=h).json()[
            "sandboxID"
        ]
        for _ in range(3)
    ]
    t1 = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)  # after the starts
    _sample(api, t1)
    httpx.delete(f"{api.url}/sandboxes/{ids[0]}", headers=h)
    t2 = t1 + timedelta(seconds=5)
    _sample(api, t2)
    r = httpx.get(
        f"{api.url}/teams/{api.team_id}/metrics",
        params={"start": int(t0.timestamp()), "end": int(t0.timestamp()) + 60},
        headers=h,
    )
    assert r.status_code == 200, r.text
    series = r.json()
    assert all(
        set(p) == {"timestamp", "timestampUnix", "concurrentSandboxes", "sandboxStartRate"}
        for p in series
    )
    points = {p["timestampUnix"]: p for p in series}
    first = points[int(t1.timestamp())]
    assert first["concurrentSandboxes"] == 3
    assert first["sandboxStartRate"] == pytest.approx(3 / (t1 - t0).total_seconds())
    second = points[int(t2.timestamp())]
    assert second["concurrentSandboxes"] == 2 and second["sandboxStartRate"] == 0
    # A window that leaves them out; a bad bound.
    r = httpx.get(f"{api.url}/teams/{api.team_id}/metrics",
                  params={"start": int(t1.timestamp()) + 1, "end": int(t2.timestamp())},
                  headers=h)  # fmt: skip
    assert [p["timestampUnix"] for p in r.json()] == [int(t2.timestamp())]
    r = httpx.get(f"{api.url}/teams/{api.team_id}/metrics", params={"start": "x"}, headers=h)
    assert r.status_code == 400
    # Another team's metrics: 404 for a member, there for an admin.
    other = {"X-API-Key": api.other_key}
    r = httpx.get(f"{api.url}/teams/{api.team_id}/metrics", headers=other)
    assert r.status_code == 404
    admin = {"X-API-Key": api.admin_key}
    r = httpx.get(f"{api.url}/teams/default/metrics",
                  params={"start": int(t0.timestamp()), "end": int(t2.timestamp())},
                  headers=admin)  # fmt: skip
    assert r.status_code == 200 and len(r.json()) == 2
    # The live use beside the quotas.
    q = httpx.get(f"{api.url}/admin/teams/default/quotas", headers=admin).json()
    assert q["usage"] == {
        "runningSandboxes": 2, "vcpus": 4, "memoryMB": 1024, "volumeBytes": 0,
        "pausedSandboxes": 0, "runningBuilds": 0,
    }  # fmt: skip
