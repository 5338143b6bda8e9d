"""E2B's admin actions on a real ``hutch serve`` (issues 16 and 18): an admin key kills
every sandbox of a team (``POST /admin/teams/{id}/sandboxes/kill``), running and paused,
and the official SDK sees them gone; ``GET /admin/sandboxes/running-counts`` and
``GET /teams/{id}/metrics/max`` count the team's real sandboxes. The SDK has no call for
these routes, so they go over httpx; the sandboxes are the SDK's."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
from e2b import Sandbox, SandboxQuery, SandboxState

from .serveproc import Serve
from .test_team_isolation import _hutch

pytestmark = pytest.mark.root

TEAM = "admin-actions-e2e"


@pytest.fixture(scope="module")
def team(serve: Serve) -> Iterator[tuple[str, str, httpx.Client]]:
    """``(team id, member key, admin client)`` of a team of this module's own."""
    admin = json.loads(_hutch(serve, "keys", "create", "--admin", "--json"))["key"]
    _hutch(serve, "team", "create", TEAM, "--api-key", admin)
    key = json.loads(_hutch(serve, "keys", "create", "--team", TEAM, "--json"))["key"]
    with httpx.Client(base_url=serve.api_url, headers={"X-API-Key": admin}, timeout=60) as c:
        team_id = next(t["teamID"] for t in c.get("/admin/teams").json() if t["name"] == TEAM)
        yield team_id, key, c
        c.post(f"/admin/teams/{team_id}/sandboxes/kill")


def test_admin_kills_every_sandbox_of_a_team(team: tuple[str, str, httpx.Client]) -> None:
    team_id, key, admin = team
    running = Sandbox.create("busybox", api_key=key, timeout=120)
    paused = Sandbox.create("busybox", api_key=key, timeout=120)
    assert paused.pause()
    assert admin.get("/admin/sandboxes/running-counts").json()[team_id] == 1
    # The usage sampler (every 5 s) sees the running one: the peak is at least 1.
    deadline = time.monotonic() + 60
    while True:
        r = admin.get(f"/teams/{team_id}/metrics/max", params={"metric": "concurrent_sandboxes"})
        assert r.status_code == 200, r.text
        if r.json()["value"] >= 1:
            break
        assert time.monotonic() < deadline, r.json()
        time.sleep(0.5)
    # A member key of the team may not; the admin key may.
    with httpx.Client(base_url=admin.base_url, headers={"X-API-Key": key}) as member:
        assert member.post(f"/admin/teams/{team_id}/sandboxes/kill").status_code == 403
    assert running.commands.run("echo alive").stdout == "alive\n"
    r = admin.post(f"/admin/teams/{team_id}/sandboxes/kill")
    assert r.status_code == 200, r.text
    assert r.json() == {"killedCount": 2, "failedCount": 0}
    assert not running.is_running()
    query = SandboxQuery(state=[SandboxState.RUNNING, SandboxState.PAUSED])
    assert Sandbox.list(api_key=key, query=query).next_items() == []
    assert team_id not in admin.get("/admin/sandboxes/running-counts").json()
