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
