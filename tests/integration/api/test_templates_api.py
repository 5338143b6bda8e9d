"""``GET /templates/{id}``, ``GET /v2/templates`` and build logs through the official SDK's
generated client (its ``from_dict`` checks every required field), against the real API
with a fake build runner (issue 18 gap 11)."""

from __future__ import annotations

import os

import httpx
from e2b import Template
from e2b.api.client.api.templates import (
    get_templates_template_id,
    get_templates_template_id_builds_build_id_logs,
    get_v2_templates,
)
from e2b.api.client.models import (
    LogLevel,
    LogsDirection,
    TemplateBuildLogsResponse,
    TemplateWithBuilds,
)
from e2b.api.client.models import Template as TemplateModel
from e2b.api.client_sync import get_api_client
from e2b.connection_config import ConnectionConfig

from tests.integration.api.test_template_builds import FakeBuildRunner, builds  # noqa: F401


def _client():
    return get_api_client(ConnectionConfig())


def test_get_template_lists_its_builds_newest_first(
    builds: tuple[str, str, FakeBuildRunner],  # noqa: F811
) -> None:
    api, other_key, _runner = builds
    first = Template.build(Template().from_template("base").run_cmd("echo 1"), "shown")
    second = Template.build(Template().from_template("base").run_cmd("echo 2"), "shown")
    r = get_templates_template_id.sync_detailed("shown", client=_client())
    assert r.status_code == 200, r.content
    got = r.parsed
    assert isinstance(got, TemplateWithBuilds)
    assert got.template_id == "shown" and got.names == ["shown"] and got.public is False
    assert [str(b.build_id) for b in got.builds] == [second.build_id, first.build_id]
    assert all(b.status.value == "ready" and b.finished_at for b in got.builds)
    # Seeded (no build in this process): the current version stands in.
    base = get_templates_template_id.sync_detailed("base", client=_client()).parsed
    assert isinstance(base, TemplateWithBuilds) and len(base.builds) == 1
    assert str(base.builds[0].build_id) == base.build_id
    # Unknown and another team's: the same 404.
    for key in (os.environ["E2B_API_KEY"], other_key):
        r = httpx.get(f"{api}/templates/nosuch", headers={"X-API-Key": key})
        assert r.status_code == 404 and r.json()["message"] == "Template nosuch not found"
    r = httpx.get(f"{api}/templates/shown", headers={"X-API-Key": other_key})
    assert r.status_code == 404


def test_v2_templates_paginates_the_teams_own(
    builds: tuple[str, str, FakeBuildRunner],  # noqa: F811
) -> None:
    api, other_key, _runner = builds
    for name in ("t1", "t2", "t3"):
        Template.build(Template().from_template("base"), name)
    seen: list[str] = []
    token = None
    while True:
        kwargs = {"next_token": token} if token else {}
        r = get_v2_templates.sync_detailed(client=_client(), limit=2, **kwargs)
        assert r.status_code == 200, r.content
        assert isinstance(r.parsed, list)
        assert all(isinstance(t, TemplateModel) for t in r.parsed) and len(r.parsed) <= 2
        seen += [t.template_id for t in r.parsed]
        token = r.headers.get("x-next-token")
        if not token:
            break
    assert seen[:3] == ["t3", "t2", "t1"]  # newest first
    assert {"basetemplate00000001", "busyboxtemplate00001"} <= set(seen)
    assert len(seen) == len(set(seen))
    theirs = httpx.get(f"{api}/v2/templates", headers={"X-API-Key": other_key}).json()
    assert theirs == []
    key = os.environ["E2B_API_KEY"]
    r = httpx.get(f"{api}/v2/templates", params={"teamID": "x"}, headers={"X-API-Key": key})
    assert r.status_code == 400 and "mismatch" in r.json()["message"]
    r = httpx.get(
        f"{api}/v2/templates", params={"nextToken": "garbage!"}, headers={"X-API-Key": key}
    )
    assert r.status_code == 400


def test_build_logs_cursor_limit_direction_level(
    builds: tuple[str, str, FakeBuildRunner],  # noqa: F811
) -> None:
    api, other_key, _runner = builds
    info = Template.build(Template().from_template("base").run_cmd("echo x"), "logged")

    def logs(**kw: object) -> list:
        r = get_templates_template_id_builds_build_id_logs.sync_detailed(
            "logged", info.build_id, client=_client(), **kw
        )
        assert r.status_code == 200, r.content
        assert isinstance(r.parsed, TemplateBuildLogsResponse)
        return r.parsed.logs

    everything = logs(limit=100)
    assert len(everything) == 100  # at most 100 per request, as infra
    assert everything[0].message.startswith("Building template logged")
    assert logs(limit=1000) == everything
    newest = logs(direction=LogsDirection.BACKWARD, limit=3)
    assert newest[0].message.startswith("Build finished")
    assert [e.timestamp for e in newest] == sorted((e.timestamp for e in newest), reverse=True)
    cursor = int(everything[50].timestamp.timestamp() * 1000)
    after = logs(cursor=cursor, limit=5)
    assert all(e.timestamp.timestamp() * 1000 >= cursor - 1 for e in after)
    assert logs(level=LogLevel.ERROR) == []
    assert logs(limit=0) == []
    key = os.environ["E2B_API_KEY"]
    unknown = "00000000-0000-4000-8000-000000000000"
    for bad, status, says in (("not-a-uuid", 400, "Invalid build id"),
                              (unknown, 404, "not found")):  # fmt: skip
        r = httpx.get(f"{api}/templates/logged/builds/{bad}/logs", headers={"X-API-Key": key})
        assert r.status_code == status and says in r.json()["message"]
    # Another team's build: the same 404 as an unknown one (issue 16: ids do not leak).
    r = httpx.get(
        f"{api}/templates/logged/builds/{info.build_id}/logs", headers={"X-API-Key": other_key}
    )
    assert r.status_code == 404 and "not found" in r.json()["message"]
    r = httpx.get(
        f"{api}/templates/logged/builds/{info.build_id}/logs",
        params={"direction": "sideways"},
        headers={"X-API-Key": key},
    )
    assert r.status_code == 400


def test_patch_template_publishes_it_to_other_teams(
    builds: tuple[str, str, FakeBuildRunner],  # noqa: F811
) -> None:
    """``PATCH /v2/templates/{id}`` ``{public}`` (``e2b template publish``): 200 ``{names}``;
    another team then sees it and may start sandboxes from it; the deprecated
    ``PATCH /templates/{id}`` answers 200 ``null``."""
    from e2b.api.client.api.templates import patch_v_2_templates_template_id
    from e2b.api.client.models import TemplateUpdateRequest, TemplateUpdateResponse

    api, other_key, _runner = builds
    Template.build(Template().from_template("base"), "shared")
    r = patch_v_2_templates_template_id.sync_detailed(
        "shared", client=_client(), body=TemplateUpdateRequest(public=True)
    )
    assert r.status_code == 200 and isinstance(r.parsed, TemplateUpdateResponse)
    assert r.parsed.names == ["shared"]
    theirs = {"X-API-Key": other_key}
    alias = httpx.get(f"{api}/templates/aliases/shared", headers=theirs)
    assert alias.status_code == 200 and alias.json()["public"] is True
    created = httpx.post(f"{api}/v2/sandboxes", json={"templateID": "shared"}, headers=theirs)
    assert created.status_code == 201, created.text
    # Only the owner may change it; an empty body changes nothing.
    r = httpx.patch(f"{api}/v2/templates/shared", json={"public": False}, headers=theirs)
    assert r.status_code == 404
    mine = {"X-API-Key": os.environ["E2B_API_KEY"]}
    assert httpx.patch(f"{api}/v2/templates/shared", json={}, headers=mine).json() == {
        "names": ["shared"]
    }
    r = httpx.patch(f"{api}/templates/shared", json={"public": False}, headers=mine)
    assert r.status_code == 200 and r.json() is None
    assert httpx.get(f"{api}/templates/aliases/shared", headers=theirs).status_code == 403
    r = httpx.patch(f"{api}/v2/templates/shared", json={"public": "yes"}, headers=mine)
    assert r.status_code == 400
