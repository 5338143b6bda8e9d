"""Team quotas on a real ``hutch serve`` with the official SDK (issue 16, ADR 0015): a
resume counts against the running quota like a create (429 as a ``RateLimitException``,
and the sandbox stays paused with its files), and a pause past ``maxPausedSandboxes`` is
refused with the sandbox still running. Other teams are not touched: the quotas are set
on a team of this test's own."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from e2b import Sandbox
from e2b.exceptions import RateLimitException

from .serveproc import Serve
from .test_team_isolation import _hutch

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def team_key(serve: Serve) -> Iterator[tuple[str, httpx.Client]]:
    admin = json.loads(_hutch(serve, "keys", "create", "--admin", "--json"))["key"]
    _hutch(serve, "team", "create", "quota-e2e", "--api-key", admin)
    key = json.loads(_hutch(serve, "keys", "create", "--team", "quota-e2e", "--json"))["key"]
    with httpx.Client(base_url=serve.api_url, headers={"X-API-Key": admin}, timeout=60) as c:
        yield key, c
    with httpx.Client(base_url=serve.api_url, headers={"X-API-Key": key}, timeout=60) as c:
        for s in c.get("/v2/sandboxes", params={"state": "running,paused"}).json():
            c.delete(f"/sandboxes/{s['sandboxID']}")


def _quotas(admin: httpx.Client, **quotas: object) -> None:
    r = admin.patch("/admin/teams/quota-e2e/quotas", json=quotas)
    assert r.status_code == 200, r.text


def test_resume_and_pause_past_the_quotas(team_key: tuple[str, httpx.Client]) -> None:
    key, admin = team_key
    paused = Sandbox.create("busybox", api_key=key, timeout=120)
    paused.files.write("/tmp/kept.txt", "kept\n")
    assert paused.pause()
    _quotas(admin, maxRunningSandboxes=1, maxPausedSandboxes=1)
    running = Sandbox.create("busybox", api_key=key, timeout=120)
    with pytest.raises(RateLimitException, match=r"maximum number of concurrent sandboxes \(1\)"):
        Sandbox.connect(paused.sandbox_id, api_key=key)
    assert Sandbox.get_info(paused.sandbox_id, api_key=key).state.value == "paused"
    # The paused slot is taken: pausing the running one is refused, and it runs on.
    with pytest.raises(RateLimitException, match=r"maximum number of paused sandboxes \(1\)"):
        running.pause()
    assert running.commands.run("echo still").stdout == "still\n"
    running.kill()
    resumed = Sandbox.connect(paused.sandbox_id, api_key=key, timeout=120)
    assert resumed.files.read("/tmp/kept.txt") == "kept\n"
    resumed.kill()
