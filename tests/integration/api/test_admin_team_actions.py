"""E2B's remaining admin and metrics routes (issues 16 and 18): ``GET /teams/{id}/metrics/
max``, ``POST /admin/teams/{id}/sandboxes/kill``, ``GET /admin/sandboxes/running-counts``
and ``POST /admin/teams/{id}/builds/cancel``, over httpx against the real API on SQLite and
PostgreSQL (the fake node, and a fake build runner that waits until released)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from hutch.shared.errors import UnavailableError
from tests.integration.api.conftest import ApiServer, PostgresDatabases, _serve, reap_now
from tests.integration.api.test_template_builds import FakeBuildRunner


class HeldBuildRunner(FakeBuildRunner):
    """Every build waits until ``release``; records the builds whose run was cancelled."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.running: set[str] = set()
        self.cancelled: set[str] = set()

    async def run_build(self, name: str, start: Mapping[str, object], **kw: object) -> None:
        build_id = str(kw["build_id"])
        self.running.add(build_id)
        try:
            while not self.release.is_set():
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            self.cancelled.add(build_id)
            raise
        self.builds.append((name, start))


@pytest.fixture(params=["sqlite", "postgres"])
def api_builds(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[ApiServer, HeldBuildRunner]]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'hutch.db'}"
    else:
        dbs: PostgresDatabases = request.getfixturevalue("postgres_databases")
        url = dbs.create()
    runner = HeldBuildRunner()
    try:
        for api in _serve(url, tmp_path, build_runner=runner):
            yield api, runner
    finally:
        runner.release.set()


def _client(api: ApiServer, key: str | None) -> httpx.Client:
    headers = {"X-API-Key": key} if key else {}
    return httpx.Client(base_url=api.url, headers=headers, timeout=30)


def _sample(api: ApiServer, at: datetime) -> None:
    usage = api.app.state.ctx.usage  # type: ignore[attr-defined]
    loop = api.app.state.loop  # type: ignore[attr-defined]
    asyncio.run_coroutine_threadsafe(usage.sample_once(at), loop).result(timeout=30)


def _team_ids(api: ApiServer) -> dict[str, str]:
    with _client(api, api.admin_key) as admin:
        return {t["name"]: t["teamID"] for t in admin.get("/admin/teams").json()}


def _admin_key_id(api: ApiServer) -> str:
    with _client(api, api.admin_key) as admin:
        return str(admin.get("/admin/teams/ops/api-keys").json()[0]["id"])


def test_metrics_max_is_the_peak_of_the_series(api_any_db: ApiServer) -> None:
    api = api_any_db
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
    with _client(api, api.key) as c:
        path = f"/teams/{api.team_id}/metrics/max"
        window = {"start": int(t0.timestamp()), "end": int(t0.timestamp()) + 60}
        # Nothing sampled in the window yet: 0, at its end.
        r = c.get(path, params={**window, "metric": "concurrent_sandboxes"})
        assert r.status_code == 200, r.text
        assert r.json() == {
            "timestamp": datetime.fromtimestamp(window["end"], UTC)
            .isoformat()
            .replace("+00:00", "Z"),
            "timestampUnix": window["end"],
            "value": 0,
        }
        _sample(api, t0)
        ids = [c.post("/sandboxes", json={"templateID": "base"}).json()["sandboxID"]
               for _ in range(3)]  # fmt: skip
        t1 = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
        _sample(api, t1)
        assert c.delete(f"/sandboxes/{ids[0]}").status_code == 204
        t2 = t1 + timedelta(seconds=5)
        _sample(api, t2)
        series = c.get(f"/teams/{api.team_id}/metrics", params=window).json()
        peak = max(series, key=lambda p: p["concurrentSandboxes"])
        r = c.get(path, params={**window, "metric": "concurrent_sandboxes"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"timestamp", "timestampUnix", "value"}
        assert body["value"] == 3 == peak["concurrentSandboxes"]
        assert (
            body["timestampUnix"] == int(t1.timestamp()) and body["timestamp"] == peak["timestamp"]
        )
        r = c.get(path, params={**window, "metric": "sandbox_start_rate"})
        assert r.json()["value"] == pytest.approx(3 / (t1 - t0).total_seconds())
        assert r.json()["timestampUnix"] == int(t1.timestamp())
        # A window after the peak: the later sample's 2.
        later = {"start": int(t1.timestamp()) + 1, "end": int(t2.timestamp())}
        r = c.get(path, params={**later, "metric": "concurrent_sandboxes"})
        assert r.json()["value"] == 2 and r.json()["timestampUnix"] == int(t2.timestamp())
        # Bad parameters: each a 400 naming what is wrong.
        for params, message in (
            ({}, "metric is required: concurrent_sandboxes or sandbox_start_rate"),
            ({"metric": "cpu"}, "metric must be one of concurrent_sandboxes, "
                                "sandbox_start_rate, not 'cpu'"),
            ({"metric": "concurrent_sandboxes", "start": "x"}, "start must be unix seconds, "
                                                               "not 'x'"),
            ({"metric": "concurrent_sandboxes", "end": "-1"}, "end must be unix seconds, "
                                                              "not '-1'"),
            ({"metric": "concurrent_sandboxes", "start": "20", "end": "10"},
             "start must not be after end"),
        ):  # fmt: skip
            r = c.get(path, params=params)
            assert r.status_code == 400, (params, r.text)
            assert r.json() == {"code": 400, "message": message}, params
    # Another team's id: 404 for its member; an admin names any team, by id or name.
    with _client(api, api.other_key) as other:
        r = other.get(
            f"/teams/{api.team_id}/metrics/max", params={"metric": "concurrent_sandboxes"}
        )
        assert r.status_code == 404, r.text
    with _client(api, api.admin_key) as admin:
        r = admin.get("/teams/default/metrics/max",
                      params={**window, "metric": "concurrent_sandboxes"})  # fmt: skip
        assert r.status_code == 200 and r.json()["value"] == 3
        r = admin.get("/teams/nosuch/metrics/max", params={"metric": "concurrent_sandboxes"})
        assert r.status_code == 404
    with _client(api, None) as anonymous:
        r = anonymous.get(f"/teams/{api.team_id}/metrics/max", params={"metric": "x"})
        assert r.status_code == 401


def test_admin_kills_a_teams_sandboxes_and_counts_running_ones(
    api_any_db: ApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    api = api_any_db
    caplog.set_level(logging.INFO, logger="hutch.audit")
    teams = _team_ids(api)
    with _client(api, api.key) as mine, _client(api, api.other_key) as theirs:
        ids = [mine.post("/sandboxes", json={"templateID": "base"}).json()["sandboxID"]
               for _ in range(3)]  # fmt: skip
        assert mine.post(f"/sandboxes/{ids[2]}/pause").status_code == 204
        # The other team can start from "base" only if it is public: use an admin-published copy.
        with _client(api, api.admin_key) as admin:
            assert admin.patch("/admin/templates/base", json={"public": True}).status_code == 200
        r = theirs.post("/sandboxes", json={"templateID": "base"})
        assert r.status_code == 201, r.text
        theirs_id = r.json()["sandboxID"]
        # Member keys: 403 with the message of every admin route; no key 401.
        for path, method in (
            ("/admin/sandboxes/running-counts", "GET"),
            ("/admin/teams/default/sandboxes/kill", "POST"),
            ("/admin/teams/default/builds/cancel", "POST"),
        ):
            r = mine.request(method, path)
            assert r.status_code == 403, r.text
            assert "needs an admin API key" in r.json()["message"]
            with _client(api, None) as anonymous:
                assert anonymous.request(method, path).status_code == 401
        assert len(mine.get("/v2/sandboxes").json()) == 3  # nothing was killed
    with _client(api, api.admin_key) as admin:
        # Running only (the paused one is not counted); teams without any omitted.
        r = admin.get("/admin/sandboxes/running-counts")
        assert r.status_code == 200, r.text
        assert r.json() == {teams["default"]: 2, teams["other"]: 1}
        # Unknown team: 404, nothing killed.
        r = admin.post("/admin/teams/nosuch/sandboxes/kill")
        assert r.status_code == 404 and r.json()["message"] == "Team 'nosuch' not found"
        # By name; running and paused alike.
        r = admin.post("/admin/teams/default/sandboxes/kill")
        assert r.status_code == 200, r.text
        assert r.json() == {"killedCount": 3, "failedCount": 0}
        with _client(api, api.key) as mine:
            assert mine.get("/v2/sandboxes", params={"state": "running,paused"}).json() == []
        assert admin.get("/admin/sandboxes/running-counts").json() == {teams["other"]: 1}
        # Nothing left: zero of each.
        r = admin.post("/admin/teams/default/sandboxes/kill")
        assert r.json() == {"killedCount": 0, "failedCount": 0}
    with _client(api, api.other_key) as theirs:
        assert [s["sandboxID"] for s in theirs.get("/v2/sandboxes").json()] == [theirs_id]
        # A kill the node refuses is counted as failed: the row is left killing (no longer
        # listed nor counted), and the reaper finishes it at its end time.
        api.node.fail_kill = UnavailableError("node unreachable")
        with _client(api, api.admin_key) as admin:
            r = admin.post("/admin/teams/other/sandboxes/kill")
            assert r.json() == {"killedCount": 0, "failedCount": 1}, r.text
            assert admin.get("/admin/sandboxes/running-counts").json() == {}
        assert theirs.get("/v2/sandboxes").json() == []
        assert theirs_id not in api.node.killed
        api.node.fail_kill = None
        reap_now(api, datetime.now(UTC) + timedelta(days=2))
        assert theirs_id in api.node.killed
    admin_id = _admin_key_id(api)
    audit = [r.getMessage() for r in caplog.records if r.name == "hutch.audit"]
    assert any(
        m.startswith(f"admin key {admin_id} killed the sandboxes of team {teams['default']}")
        for m in audit
    ), audit


def _wait(check: object, what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_admin_cancels_a_teams_pending_and_running_builds(
    api_builds: tuple[ApiServer, HeldBuildRunner], caplog: pytest.LogCaptureFixture
) -> None:
    api, runner = api_builds
    caplog.set_level(logging.INFO, logger="hutch.audit")
    teams = _team_ids(api)
    with _client(api, api.key) as c, _client(api, api.admin_key) as admin:

        def requested(client: httpx.Client, name: str) -> str:
            r = client.post("/v3/templates", json={"name": name})
            assert r.status_code == 202, r.text
            return str(r.json()["buildID"])

        def status(client: httpx.Client, name: str, build_id: str) -> dict[str, object]:
            return dict(client.get(f"/templates/{name}/builds/{build_id}/status").json())

        pending = requested(c, "pending1")
        running = requested(c, "running1")
        r = c.post(f"/v2/templates/running1/builds/{running}", json={"steps": []})
        assert r.status_code == 202, r.text
        _wait(lambda: running in runner.running, "the worker to run the build")
        with _client(api, api.other_key) as other:
            theirs = requested(other, "theirs1")
        assert admin.post("/admin/teams/nosuch/builds/cancel").status_code == 404
        r = admin.post(f"/admin/teams/{teams['default']}/builds/cancel")
        assert r.status_code == 200, r.text
        assert r.json() == {"cancelledCount": 2, "failedCount": 0}
        for name, build_id in (("pending1", pending), ("running1", running)):
            s = status(c, name, build_id)
            assert s["status"] == "error", s
            assert s["reason"]["message"] == "cancelled by an admin", s  # type: ignore[index]
            assert any("Build cancelled: cancelled by an admin" in e["message"]
                       for e in s["logEntries"]), s  # type: ignore[union-attr]  # fmt: skip
        # The running build's run is stopped (at the worker's next heartbeat), and it
        # publishes nothing when released.
        _wait(lambda: running in runner.cancelled, "the worker to stop the cancelled run")
        runner.release.set()
        assert runner.builds == []
        assert status(c, "running1", running)["status"] == "error"
        # A first build cancelled leaves its template in error, not waiting or building.
        listed = {t["aliases"][0]: t for t in c.get("/templates").json() if t["aliases"]}
        assert listed["running1"]["buildStatus"] == "error", listed["running1"]
        # The other team's build is untouched; nothing more to cancel.
        with _client(api, api.other_key) as other:
            assert status(other, "theirs1", theirs)["status"] == "waiting"
        r = admin.post("/admin/teams/default/builds/cancel")
        assert r.json() == {"cancelledCount": 0, "failedCount": 0}
    admin_id = _admin_key_id(api)
    audit = [r.getMessage() for r in caplog.records if r.name == "hutch.audit"]
    assert any(
        m.startswith(f"admin key {admin_id} cancelled the builds of team {teams['default']}")
        and "2 cancelled, 0 failed" in m
        for m in audit
    ), audit
