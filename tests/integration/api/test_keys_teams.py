"""``/api-keys`` and ``/teams`` as E2B's CLI and dashboard call them (issue 18 gap 11),
over httpx against the real API on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import datetime

import httpx
import pytest

from tests.integration.api.conftest import ApiServer


def _bearer(api: ApiServer, key: str | None = None) -> httpx.Client:
    token = key if key is not None else api.key
    return httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def test_api_keys_create_list_rename_delete(api_any_db: ApiServer) -> None:
    api = api_any_db
    with _bearer(api) as c:
        r = c.post("/api-keys", json={"name": "ci"})
        assert r.status_code == 201, r.text
        created = r.json()
        assert set(created) == {"id", "key", "mask", "name", "createdAt"}
        assert uuid.UUID(created["id"]) and created["name"] == "ci"
        key = created["key"]
        assert created["mask"] == {
            "prefix": "e2b_",
            "valueLength": 40,
            "maskedValuePrefix": key[4:6],
            "maskedValueSuffix": key[-4:],
        }
        datetime.fromisoformat(created["createdAt"])
        # The new key works, as an API key and as a bearer.
        assert httpx.get(f"{api.url}/v2/sandboxes", headers={"X-API-Key": key}).status_code == 200
        listed = c.get("/api-keys").json()
        assert [k["name"] for k in listed] == ["test", "ci"]
        assert all(set(k) == {"id", "name", "mask", "createdAt"} for k in listed)
        assert c.patch(f"/api-keys/{created['id']}", json={"name": "renamed"}).status_code == 202
        assert [k["name"] for k in c.get("/api-keys").json()] == ["test", "renamed"]
        assert c.delete(f"/api-keys/{created['id']}").status_code == 204
        assert httpx.get(f"{api.url}/v2/sandboxes", headers={"X-API-Key": key}).status_code == 401
        r = c.delete(f"/api-keys/{created['id']}")
        assert r.status_code == 404 and r.json() == {"code": 404, "message": "id not found"}
        assert c.patch(f"/api-keys/{uuid.uuid4()}", json={"name": "x"}).status_code == 404
        assert c.delete("/api-keys/not-a-uuid").status_code == 400
        assert c.post("/api-keys", json={}).status_code == 400
        assert c.post("/api-keys", json={"name": ""}).status_code == 400


def test_api_keys_are_per_team_and_take_x_api_key_too(api: ApiServer) -> None:
    with httpx.Client(base_url=api.url, headers={"X-API-Key": api.other_key}) as other:
        theirs = other.get("/api-keys").json()
        assert [k["name"] for k in theirs] == ["other"]
    with _bearer(api) as c:
        mine = c.get("/api-keys").json()
        assert [k["name"] for k in mine] == ["test"]
        # Another team's key is not found, never renamed or revoked.
        assert c.patch(f"/api-keys/{theirs[0]['id']}", json={"name": "x"}).status_code == 404
        assert c.delete(f"/api-keys/{theirs[0]['id']}").status_code == 404
    assert httpx.get(f"{api.url}/v2/sandboxes", headers={"X-API-Key": api.other_key}).is_success


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer e2b_" + "0" * 40}, {"Authorization": "Basic abc"}],
)
def test_api_keys_and_teams_need_credentials(api: ApiServer, headers: dict[str, str]) -> None:
    for path in ("/api-keys", "/teams"):
        r = httpx.get(api.url + path, headers=headers)
        assert r.status_code == 401, (path, headers)
        assert r.json()["code"] == 401 and r.json()["message"]


def test_teams_answers_the_callers_team_with_a_fresh_cli_key(api: ApiServer) -> None:
    with _bearer(api) as c:
        r = c.get("/teams")
        assert r.status_code == 200, r.text
        [team] = r.json()
        assert set(team) == {"teamID", "name", "apiKey", "isDefault"}
        assert team["teamID"] == api.team_id and team["name"] == "default" and team["isDefault"]
        # What `e2b auth login` stores: a key that works for the SDK.
        sandboxes = httpx.get(f"{api.url}/v2/sandboxes", headers={"X-API-Key": team["apiKey"]})
        assert sandboxes.status_code == 200
        names = [k["name"] for k in c.get("/api-keys").json()]
        assert names == ["test", "CLI login/configure"]
    # /teams takes the bearer only (E2B: an access token, never X-API-Key).
    r = httpx.get(f"{api.url}/teams", headers={"X-API-Key": api.key})
    assert r.status_code == 401
    with _bearer(api, api.other_key) as c:
        [other] = c.get("/teams").json()
        assert other["name"] == "other" and other["isDefault"] is False
