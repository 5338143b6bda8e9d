"""Per-team quotas (issue 16, ADR 0015) through the real API on SQLite and PostgreSQL:
set by an admin, enforced at create with 429 and E2B's body naming the quota, and the race
for the last slot won by exactly the quota."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from e2b import Sandbox
from e2b.exceptions import RateLimitException

from tests.integration.api.conftest import ApiServer


def _admin(api: ApiServer) -> httpx.Client:
    return httpx.Client(base_url=api.url, headers={"X-API-Key": api.admin_key}, timeout=30)


def _member(api: ApiServer, key: str | None = None) -> httpx.Client:
    return httpx.Client(base_url=api.url, headers={"X-API-Key": key or api.key}, timeout=30)


def _set(api: ApiServer, team: str = "default", **quotas: object) -> dict[str, object]:
    with _admin(api) as admin:
        r = admin.patch(f"/admin/teams/{team}/quotas", json=quotas)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]


def test_running_quota_is_429_naming_it_and_not_retried(api_any_db: ApiServer) -> None:
    api = api_any_db
    body = _set(api, maxRunningSandboxes=2)
    assert body["quotas"]["maxRunningSandboxes"] == 2  # type: ignore[index]
    assert body["overrides"]["maxVcpus"] is None  # type: ignore[index]
    with _member(api) as c:
        ids = [c.post("/sandboxes", json={"templateID": "base"}).json()["sandboxID"] for _ in "ab"]
        r = c.post("/sandboxes", json={"templateID": "base"})
        assert r.status_code == 429, r.text
        assert r.json() == {
            "code": 429,
            "message": "You have reached the maximum number of concurrent sandboxes (2): "
            "quota maxRunningSandboxes of this team",
        }
        assert r.headers["Should-Retry"] == "false"
        assert len(api.node.running) == 2  # nothing half-made
        # Another team is not limited by this team's quota.
        with _member(api, api.other_key) as other:
            assert c.patch("/v2/templates/base", json={"public": True}).status_code == 200
            assert other.post("/sandboxes", json={"templateID": "base"}).status_code == 201
        # A kill makes room.
        assert c.delete(f"/sandboxes/{ids[0]}").status_code == 204
        assert c.post("/sandboxes", json={"templateID": "base"}).status_code == 201
        # Lowered below use: the running ones go on, new ones wait for room.
        _set(api, maxRunningSandboxes=1)
        assert c.get(f"/sandboxes/{ids[1]}").status_code == 200
        assert c.post("/sandboxes", json={"templateID": "base"}).status_code == 429
        # Back to the default (no limit).
        _set(api, maxRunningSandboxes=None)
        assert c.post("/sandboxes", json={"templateID": "base"}).status_code == 201


def test_concurrent_creates_for_the_last_slots_exactly_the_quota_wins(
    api_any_db: ApiServer,
) -> None:
    api = api_any_db
    _set(api, maxRunningSandboxes=3)

    def create(_: int) -> int:
        with _member(api) as c:
            return c.post("/sandboxes", json={"templateID": "base"}).status_code

    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(pool.map(create, range(12)))
    assert sorted(statuses) == [201] * 3 + [429] * 9, statuses
    assert len(api.node.running) == 3


def test_vcpu_and_memory_quotas(api_any_db: ApiServer) -> None:
    api = api_any_db  # base: 2 vCPUs, 512 MiB
    _set(api, maxVcpus=5)
    with _member(api) as c:
        assert c.post("/sandboxes", json={"templateID": "base"}).status_code == 201
        assert c.post("/sandboxes", json={"templateID": "base"}).status_code == 201
        r = c.post("/sandboxes", json={"templateID": "base"})
        assert r.status_code == 429
        assert r.json()["message"] == (
            "You have reached the maximum total vCPUs of running sandboxes (5; 4 in use, this "
            "sandbox needs 2): quota maxVcpus of this team"
        )
        _set(api, maxVcpus=0, maxMemoryMB=1500)
        r = c.post("/sandboxes", json={"templateID": "base"})
        assert r.status_code == 429 and "quota maxMemoryMB" in r.json()["message"]
        assert "(1500 MiB; 1024 MiB in use" in r.json()["message"]
    assert len(api.node.running) == 2


def test_max_timeout_is_e2bs_400(api: ApiServer) -> None:
    _set(api, maxTimeout=600)
    with _member(api) as c:
        r = c.post("/sandboxes", json={"templateID": "base", "timeout": 601})
        assert r.status_code == 400
        assert r.json()["message"] == (
            "Timeout cannot be greater than 600 seconds: quota maxTimeout of this team"
        )
        assert c.post("/sandboxes", json={"templateID": "base", "timeout": 600}).status_code == 201
    assert len(api.node.running) == 1


def test_volume_bytes_quota(api: ApiServer) -> None:
    _set(api, maxVolumeBytes=3 << 20)
    with _member(api) as c:
        assert c.post("/volumes", json={"name": "v1", "sizeMB": 2}).status_code == 201
        r = c.post("/volumes", json={"name": "v2", "sizeMB": 2})
        assert r.status_code == 429
        assert "quota maxVolumeBytes" in r.json()["message"]
        assert "(3145728 bytes; 2097152 in use" in r.json()["message"]
        assert [v["name"] for v in c.get("/volumes").json()] == ["v1"]
        assert c.post("/volumes", json={"name": "v3", "sizeMB": 1}).status_code == 201


def test_settings_defaults_apply_until_an_admin_overrides(tmp_path: object) -> None:
    from pathlib import Path

    from tests.integration.api.conftest import _serve

    assert isinstance(tmp_path, Path)
    gen = _serve(f"sqlite+aiosqlite:///{tmp_path / 'hutch.db'}", tmp_path,
                 team_max_running_sandboxes=1)  # fmt: skip
    api = next(gen)
    try:
        with _admin(api) as admin:
            q = admin.get("/admin/teams/default/quotas").json()
            assert q["quotas"]["maxRunningSandboxes"] == 1
            assert q["overrides"]["maxRunningSandboxes"] is None
        with _member(api) as c:
            assert c.post("/sandboxes", json={"templateID": "base"}).status_code == 201
            assert c.post("/sandboxes", json={"templateID": "base"}).status_code == 429
        _set(api, maxRunningSandboxes=0)  # this team: no limit
        with _member(api) as c:
            assert c.post("/sandboxes", json={"templateID": "base"}).status_code == 201
    finally:
        gen.close()


def test_the_sdk_sees_a_quota_as_rate_limit_without_retrying(sdk_env: ApiServer) -> None:
    api = sdk_env
    _set(api, maxRunningSandboxes=1)
    Sandbox.create("base")
    with pytest.raises(RateLimitException, match="maximum number of concurrent sandboxes"):
        Sandbox.create("base")
    assert len(api.node.running) == 1


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"maxRunningSandboxes": -1}, "maxRunningSandboxes: -1 is not a whole number"),
        ({"maxVcpus": 10**9}, "maxVcpus: 1000000000 is not a whole number"),
        ({"maxMemoryMB": "lots"}, "maxMemoryMB: 'lots'"),
        ({"maxTimeout": 1.5}, "maxTimeout: 1.5"),
        ({"maxTimeout": True}, "maxTimeout: True"),
        ({"maxSandwiches": 1}, "unknown quota 'maxSandwiches'"),
    ],
)
def test_bad_quotas_are_400(api: ApiServer, body: dict[str, object], says: str) -> None:
    with _admin(api) as admin:
        r = admin.patch("/admin/teams/default/quotas", json=body)
        assert r.status_code == 400 and says in r.json()["message"], r.text


def test_quotas_need_an_admin_and_a_known_team(api: ApiServer) -> None:
    with _member(api) as c:
        r = c.patch("/admin/teams/default/quotas", json={"maxVcpus": 1})
        assert r.status_code == 403 and "needs an admin API key" in r.json()["message"]
        assert c.get("/admin/teams/default/quotas").status_code == 403
    with _admin(api) as admin:
        assert admin.get("/admin/teams/nope/quotas").status_code == 404
        assert admin.patch("/admin/teams/nope/quotas", json={}).status_code == 404
        assert admin.patch("/admin/teams/default/quotas", json=[1]).status_code == 400


def _paused(c: httpx.Client, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        sid = c.post("/sandboxes", json={"templateID": "base"}).json()["sandboxID"]
        assert c.post(f"/sandboxes/{sid}/pause").status_code == 204
        ids.append(sid)
    return ids


def test_a_resume_counts_against_the_running_quota(api_any_db: ApiServer) -> None:
    api = api_any_db
    with _member(api) as c:
        [paused] = _paused(c, 1)
        _set(api, maxRunningSandboxes=1)
        running = c.post("/sandboxes", json={"templateID": "base"}).json()["sandboxID"]
        r = c.post(f"/sandboxes/{paused}/connect", json={"timeout": 60})
        assert r.status_code == 429, r.text
        assert r.json() == {
            "code": 429,
            "message": "You have reached the maximum number of concurrent sandboxes (1): "
            "quota maxRunningSandboxes of this team",
        }
        assert r.headers["Should-Retry"] == "false"
        # The deprecated resume too; nothing changed: still paused, the node never asked.
        assert c.post(f"/sandboxes/{paused}/resume", json={}).status_code == 429
        assert c.get(f"/sandboxes/{paused}").json()["state"] == "paused"
        assert api.node.resumes == [] and paused in api.node.paused
        # The vCPU quota counts the resumed sandbox's own vCPUs (base: 2).
        _set(api, maxRunningSandboxes=0, maxVcpus=3)
        r = c.post(f"/sandboxes/{paused}/connect", json={"timeout": 60})
        assert r.status_code == 429 and "(3; 2 in use, this sandbox needs 2)" in r.text
        # Room made: the resume goes through.
        assert c.delete(f"/sandboxes/{running}").status_code == 204
        assert c.post(f"/sandboxes/{paused}/connect", json={"timeout": 60}).status_code == 201
        assert c.get(f"/sandboxes/{paused}").json()["state"] == "running"


def test_concurrent_resumes_for_the_last_slots_exactly_the_quota_wins(
    api_any_db: ApiServer,
) -> None:
    api = api_any_db
    with _member(api) as c:
        ids = _paused(c, 8)
    _set(api, maxRunningSandboxes=3)

    def resume(sid: str) -> int:
        with _member(api) as c:
            return c.post(f"/sandboxes/{sid}/connect", json={"timeout": 60}).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(resume, ids))
    assert sorted(statuses) == [201] * 3 + [429] * 5, statuses
    assert len(api.node.resumes) == 3 and len(api.node.paused) == 5


def test_the_sdk_connect_past_the_quota_is_a_rate_limit(sdk_env: ApiServer) -> None:
    api = sdk_env
    paused = Sandbox.create("base")
    paused.pause()
    _set(api, maxRunningSandboxes=1)
    Sandbox.create("base")
    with pytest.raises(RateLimitException, match="maximum number of concurrent sandboxes"):
        Sandbox.connect(paused.sandbox_id)
    assert api.node.resumes == []


def test_paused_quota(api_any_db: ApiServer) -> None:
    api = api_any_db
    _set(api, maxPausedSandboxes=2)
    with _member(api) as c:
        kept = _paused(c, 2)
        third = c.post("/sandboxes", json={"templateID": "base"}).json()["sandboxID"]
        r = c.post(f"/sandboxes/{third}/pause")
        assert r.status_code == 429, r.text
        assert r.json()["message"] == (
            "You have reached the maximum number of paused sandboxes (2): quota "
            "maxPausedSandboxes of this team; kill or resume one first"
        )
        assert c.get(f"/sandboxes/{third}").json()["state"] == "running"
        assert third not in api.node.paused
        # Another team is not limited by it.
        with _member(api, api.other_key) as other:
            assert c.patch("/v2/templates/base", json={"public": True}).status_code == 200
            _paused(other, 3)
        # A resume makes room.
        assert c.post(f"/sandboxes/{kept[0]}/connect", json={"timeout": 60}).status_code == 201
        assert c.post(f"/sandboxes/{third}/pause").status_code == 204


def test_concurrent_pauses_for_the_last_paused_slot(api_any_db: ApiServer) -> None:
    api = api_any_db
    with _member(api) as c:
        ids = [c.post("/sandboxes", json={"templateID": "base"}).json()["sandboxID"]
               for _ in range(6)]  # fmt: skip
    _set(api, maxPausedSandboxes=2)

    def pause(sid: str) -> int:
        with _member(api) as c:
            return c.post(f"/sandboxes/{sid}/pause").status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = list(pool.map(pause, ids))
    assert sorted(statuses) == [204] * 2 + [429] * 4, statuses
    assert len(api.node.paused) == 2


def test_auto_pause_past_the_paused_quota_kills_at_the_timeout(api: ApiServer) -> None:
    from datetime import UTC, datetime, timedelta

    from tests.integration.api.conftest import reap_now

    _set(api, maxPausedSandboxes=1)
    with _member(api) as c:
        [kept] = _paused(c, 1)
        sid = c.post(
            "/sandboxes", json={"templateID": "base", "autoPause": True, "timeout": 30}
        ).json()["sandboxID"]
        reap_now(api, datetime.now(UTC) + timedelta(seconds=60))
        assert c.get(f"/sandboxes/{sid}").status_code == 404  # killed, not left running
        assert sid in api.node.killed and sid not in api.node.paused
        assert c.get(f"/sandboxes/{kept}").json()["state"] == "paused"


def test_concurrent_volume_creates_for_the_last_bytes(api_any_db: ApiServer) -> None:
    api = api_any_db
    _set(api, maxVolumeBytes=3 << 20)  # room for three 1 MiB volumes

    def create(i: int) -> int:
        with _member(api) as c:
            return c.post("/volumes", json={"name": f"v{i}", "sizeMB": 1}).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(create, range(8)))
    assert sorted(statuses) == [201] * 3 + [429] * 5, statuses
    with _member(api) as c:
        assert len(c.get("/volumes").json()) == 3


def test_the_sdk_sees_the_vcpu_memory_and_timeout_quotas(sdk_env: ApiServer) -> None:
    from e2b.exceptions import InvalidArgumentException, SandboxException

    api = sdk_env
    _set(api, maxVcpus=3)  # base: 2 vCPUs
    Sandbox.create("base")
    with pytest.raises(RateLimitException, match="quota maxVcpus"):
        Sandbox.create("base")
    _set(api, maxVcpus=0, maxMemoryMB=600)  # base: 512 MiB
    with pytest.raises(RateLimitException, match="quota maxMemoryMB"):
        Sandbox.create("base")
    _set(api, maxMemoryMB=0, maxTimeout=600)
    with pytest.raises((InvalidArgumentException, SandboxException), match="quota maxTimeout"):
        Sandbox.create("base", timeout=601)
    assert len(api.node.running) == 1
