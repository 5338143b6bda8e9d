"""``/admin/teams``: teams and their keys for admin keys (issue 16, ADR 0015), over httpx
against the real API on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import uuid

import httpx
import pytest

from tests.integration.api.conftest import ApiServer


def _client(api: ApiServer, key: str) -> httpx.Client:
    return httpx.Client(base_url=api.url, headers={"X-API-Key": key}, timeout=30)


def test_admin_creates_lists_and_deletes_teams_and_their_keys(
    api_any_db: ApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    api = api_any_db
    caplog.set_level(logging.INFO, logger="hutch.audit")
    with _client(api, api.admin_key) as admin:
        r = admin.post("/admin/teams", json={"name": "alpha"})
        assert r.status_code == 201, r.text
        alpha = r.json()
        assert set(alpha) == {"teamID", "name", "createdAt", "isDefault", "liveSandboxes"}
        assert uuid.UUID(alpha["teamID"]) and alpha["name"] == "alpha"
        listed = admin.get("/admin/teams").json()
        assert [t["name"] for t in listed] == ["default", "other", "ops", "alpha"]
        assert [t["isDefault"] for t in listed] == [True, False, False, False]
        # A member key of the new team, by name; then by id, an admin key.
        r = admin.post("/admin/teams/alpha/api-keys", json={"name": "a1"})
        assert r.status_code == 201, r.text
        member = r.json()
        assert member["teamID"] == alpha["teamID"] and member["admin"] is False
        r = admin.post(
            f"/admin/teams/{alpha['teamID']}/api-keys", json={"name": "a2", "admin": True}
        )
        assert r.status_code == 201 and r.json()["admin"] is True
        a2_secret = r.json()["key"]
        keys = admin.get("/admin/teams/alpha/api-keys").json()
        assert [(k["name"], k["admin"]) for k in keys] == [("a1", False), ("a2", True)]
        assert all("key" not in k for k in keys)
        # The member key works on its team's routes and sees only its team's keys.
        with _client(api, member["key"]) as m:
            assert m.get("/v2/sandboxes").status_code == 200
            assert [k["name"] for k in m.get("/api-keys").json()] == ["a1", "a2"]
        # Revoke a1 as admin: 401 from then on.
        assert admin.delete(f"/admin/teams/alpha/api-keys/{member['id']}").status_code == 204
        with _client(api, member["key"]) as m:
            assert m.get("/v2/sandboxes").status_code == 401
        r = admin.delete(f"/admin/teams/alpha/api-keys/{member['id']}")
        assert r.status_code == 404 and r.json()["message"] == "id not found"
        # A key of another team is not found under this one.
        other_keys = admin.get("/admin/teams/other/api-keys").json()
        r = admin.delete(f"/admin/teams/alpha/api-keys/{other_keys[0]['id']}")
        assert r.status_code == 404
        # Delete the team: its remaining key a2 answers 401.
        assert admin.delete("/admin/teams/alpha").status_code == 204
        with _client(api, a2_secret) as gone:
            assert gone.get("/v2/sandboxes").status_code == 401
            assert gone.get("/admin/teams").status_code == 401
        assert [t["name"] for t in admin.get("/admin/teams").json()] == ["default", "other", "ops"]
        assert admin.get("/admin/teams/alpha/api-keys").status_code == 404
    audit = [r.getMessage() for r in caplog.records if r.name == "hutch.audit"]
    admin_id = _admin_key_id(api)
    assert any(m.startswith(f"admin key {admin_id} created team") for m in audit), audit
    assert any(f"revoked key {member['id']}" in m for m in audit), audit
    assert any("deleted team" in m and admin_id in m for m in audit), audit


def _admin_key_id(api: ApiServer) -> str:
    with _client(api, api.admin_key) as admin:
        keys = admin.get("/admin/teams/ops/api-keys").json()
    return str(keys[0]["id"])


def test_a_deleted_teams_key_is_401(api: ApiServer) -> None:
    with _client(api, api.admin_key) as admin:
        admin.post("/admin/teams", json={"name": "gone"})
        key = admin.post("/admin/teams/gone/api-keys", json={"name": "k"}).json()["key"]
        with _client(api, key) as k:
            assert k.get("/v2/sandboxes").status_code == 200
        assert admin.delete("/admin/teams/gone").status_code == 204
    for headers in ({"X-API-Key": key}, {"Authorization": f"Bearer {key}"}):
        r = httpx.get(f"{api.url}/api-keys", headers=headers)
        assert r.status_code == 401 and r.json()["code"] == 401, r.text
    r = httpx.get(f"{api.url}/v2/sandboxes", headers={"X-API-Key": key})
    assert r.status_code == 401 and r.json() == {"code": 401, "message": "Invalid API key"}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/admin/teams", None),
        ("POST", "/admin/teams", {"name": "x"}),
        ("DELETE", "/admin/teams/other", None),
        ("GET", "/admin/teams/other/api-keys", None),
        ("POST", "/admin/teams/other/api-keys", {"name": "x"}),
        ("DELETE", f"/admin/teams/other/api-keys/{uuid.uuid4()}", None),
    ],
)
def test_member_keys_get_403_on_admin_routes(
    api: ApiServer, method: str, path: str, body: object
) -> None:
    r = httpx.request(method, api.url + path, json=body, headers={"X-API-Key": api.key})
    assert r.status_code == 403, r.text
    message = r.json()["message"]
    assert "needs an admin API key" in message and "member key of team 'default'" in message
    assert "hutch keys create --admin" in message
    # No key at all: 401, not 403.
    r = httpx.request(method, api.url + path, json=body)
    assert r.status_code == 401


def test_admin_bad_input(api: ApiServer) -> None:
    with _client(api, api.admin_key) as admin:
        assert admin.post("/admin/teams", json={"name": "dup"}).status_code == 201
        r = admin.post("/admin/teams", json={"name": "dup"})
        assert r.status_code == 409 and "dup" in r.json()["message"]
        for bad in ("", "-x", "a b", "x" * 64, "a/b"):
            r = admin.post("/admin/teams", json={"name": bad})
            assert r.status_code == 400 and "invalid team name" in r.json()["message"], bad
        assert admin.post("/admin/teams", json={}).status_code == 400
        assert admin.post("/admin/teams", json={"name": 3}).status_code == 400
        r = admin.delete("/admin/teams/nope")
        assert r.status_code == 404 and r.json()["message"] == "Team 'nope' not found"
        assert admin.post("/admin/teams/nope/api-keys", json={"name": "k"}).status_code == 404
        assert admin.post("/admin/teams/dup/api-keys", json={"name": ""}).status_code == 400
        assert admin.delete("/admin/teams/dup/api-keys/not-a-uuid").status_code == 400
        r = admin.delete("/admin/teams/default")
        assert r.status_code == 409 and "default team" in r.json()["message"]
        assert admin.delete("/admin/teams/dup?force=maybe").status_code == 400


def test_delete_refuses_live_sandboxes_unless_forced(api_any_db: ApiServer) -> None:
    api = api_any_db
    with _client(api, api.admin_key) as admin:
        admin.post("/admin/teams", json={"name": "busy"})
        key = admin.post("/admin/teams/busy/api-keys", json={"name": "k"}).json()["key"]
        with _client(api, key) as k:
            # base is the default team's private template: another team cannot use it.
            r = k.post("/sandboxes", json={"templateID": "base"})
            assert r.status_code == 404, r.text
            vol = k.post("/volumes", json={"name": "data"})
            assert vol.status_code == 201, vol.text
        # Make the default team's base template public, so the busy team can start one.
        with _client(api, api.key) as owner:
            assert owner.patch("/v2/templates/base", json={"public": True}).status_code == 200
        with _client(api, key) as k:
            r = k.post("/sandboxes", json={"templateID": "base"})
            assert r.status_code == 201, r.text
            sandbox_id = r.json()["sandboxID"]
        listed = {t["name"]: t for t in admin.get("/admin/teams").json()}
        assert listed["busy"]["liveSandboxes"] == 1
        r = admin.delete("/admin/teams/busy")
        assert r.status_code == 409
        assert "owns 1 running or paused sandbox" in r.json()["message"]
        assert "force=true" in r.json()["message"]
        assert sandbox_id in api.node.running  # type: ignore[attr-defined]
        assert admin.delete("/admin/teams/busy?force=true").status_code == 204
        assert sandbox_id not in api.node.running  # type: ignore[attr-defined]
    r = httpx.get(f"{api.url}/sandboxes/{sandbox_id}", headers={"X-API-Key": api.admin_key})
    assert r.status_code == 404


def test_admin_publishes_any_teams_template_logged_with_its_key(
    api: ApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hutch.audit")
    with _client(api, api.admin_key) as admin:
        admin_id = admin.get("/admin/teams/ops/api-keys").json()[0]["id"]
    with _client(api, api.other_key) as other:
        assert [t["templateID"] for t in other.get("/templates").json()] == []
        r = other.post("/sandboxes", json={"templateID": "base"})
        assert r.status_code == 404  # the default team's template, not public
    with _client(api, api.admin_key) as admin:
        r = admin.patch("/admin/templates/base", json={"public": True})
        assert r.status_code == 200, r.text
        assert r.json() == {"templateID": "basetemplate00000001", "teamID": api.team_id,
                            "public": True}  # fmt: skip
    with _client(api, api.other_key) as other:
        assert other.post("/sandboxes", json={"templateID": "base"}).status_code == 201
        # A member may not publish another team's template (nor learn it exists: 403 is
        # about the role, before any lookup).
        r = other.patch("/admin/templates/base", json={"public": False})
        assert r.status_code == 403 and "needs an admin API key" in r.json()["message"]
    with _client(api, api.admin_key) as admin:
        assert admin.patch("/admin/templates/base", json={"public": False}).status_code == 200
        assert admin.patch("/admin/templates/nope", json={"public": True}).status_code == 404
        r = admin.patch("/admin/templates/base", json={"public": "yes"})
        assert r.status_code == 400
    with _client(api, api.other_key) as other:
        assert other.post("/sandboxes", json={"templateID": "base"}).status_code == 404
    audit = [r.getMessage() for r in caplog.records if r.name == "hutch.audit"]
    assert (
        f"admin key {admin_id} published template basetemplate00000001 of team "
        f"{api.team_id}" in audit
    ), audit
    assert any(m.startswith(f"admin key {admin_id} unpublished template") for m in audit)


def test_admin_lists_every_teams_sandboxes(api_any_db: ApiServer) -> None:
    api = api_any_db
    with _client(api, api.key) as mine:
        a = mine.post("/sandboxes", json={"templateID": "base"}).json()["sandboxID"]
        b = mine.post("/sandboxes", json={"templateID": "base"}).json()["sandboxID"]
        assert mine.post(f"/sandboxes/{b}/pause").status_code == 204
        assert mine.patch("/v2/templates/base", json={"public": True}).status_code == 200
    with _client(api, api.other_key) as other:
        c = other.post("/sandboxes", json={"templateID": "base"}).json()["sandboxID"]
        # A member sees only its own team's, and not this route.
        assert [s["sandboxID"] for s in other.get("/v2/sandboxes").json()] == [c]
        assert other.get("/admin/sandboxes").status_code == 403
    with _client(api, api.admin_key) as admin:
        listed = admin.get("/admin/sandboxes").json()
        assert {(s["sandboxID"], s["teamName"], s["state"]) for s in listed} == {
            (a, "default", "running"), (b, "default", "paused"), (c, "other", "running"),
        }  # fmt: skip
        assert all(s["templateID"] == "basetemplate00000001" for s in listed)
        only = admin.get("/admin/sandboxes", params={"teamID": "other"}).json()
        assert [s["sandboxID"] for s in only] == [c]
        assert admin.get("/admin/sandboxes", params={"teamID": "nope"}).status_code == 404
