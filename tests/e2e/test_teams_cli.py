"""``hutch team`` and ``hutch keys`` against the session's real ``hutch serve`` (issue 16):
an admin key made through the store, teams made and deleted through the admin API, a team's
key driving the official SDK, and a deleted team's key answering 401."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest
from e2b import AuthenticationException, Sandbox

from .serveproc import Serve

pytestmark = pytest.mark.root


def hutch(serve: Serve, *args: str) -> subprocess.CompletedProcess[str]:
    words = 2  # "team create", "keys list", ...
    argv = [sys.executable, "-m", "hutch", *args[:words], "--home", str(serve.home),
            *args[words:]]  # fmt: skip
    return subprocess.run(argv, env=serve.env, capture_output=True, text=True, timeout=120)


def ok(serve: Serve, *args: str) -> str:
    done = hutch(serve, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_team_lifecycle_through_the_cli(serve: Serve) -> None:
    admin = json.loads(ok(serve, "keys", "create", "--admin", "--name", "ops", "--json"))
    assert admin["admin"] is True
    member = json.loads(ok(serve, "keys", "create", "--json"))["key"]
    as_admin = ("--api-key", admin["key"])

    team_id = ok(serve, "team", "create", "cli-alpha", *as_admin).strip()
    listed = [
        json.loads(line) for line in ok(serve, "team", "list", "--json", *as_admin).splitlines()
    ]
    assert {"cli-alpha", "default"} <= {t["name"] for t in listed}
    assert ok(serve, "team", "list", *as_admin).count("(default)") == 1

    key = json.loads(ok(serve, "keys", "create", "--team", "cli-alpha", "--json", "--name", "a"))
    assert key["teamId"] == team_id and key["admin"] is False
    keys = ok(serve, "keys", "list", "--team", "cli-alpha", *as_admin)
    assert key["id"] in keys and "member" in keys and key["key"] not in keys

    # The team's key drives the SDK; the admin CLI sees the team's live sandbox.
    sbx = Sandbox.create("busybox", api_key=key["key"], timeout=120)
    deleted = False
    try:
        assert sbx.commands.run("echo hi").stdout == "hi\n"
        used = ok(serve, "team", "usage", "cli-alpha", *as_admin)
        assert "running sandboxes: 1 of no limit" in used, used
        assert (
            json.loads(ok(serve, "team", "usage", "cli-alpha", "--json", *as_admin))["usage"][
                "runningSandboxes"
            ]
            == 1
        )
        refused = hutch(serve, "team", "delete", "cli-alpha", *as_admin)
        assert refused.returncode == 1
        assert "hutch: 409: Team 'cli-alpha' owns 1 running or paused" in refused.stderr
        # A member key is refused the admin commands with the API's 403.
        denied = hutch(serve, "team", "list", "--api-key", member)
        assert denied.returncode == 1 and "hutch: 403:" in denied.stderr
        assert "needs an admin API key" in denied.stderr
        ok(serve, "team", "delete", "cli-alpha", "--force", *as_admin)
        deleted = True
    finally:
        if not deleted:
            sbx.kill()
    # The deleted team's key: 401, through the SDK and plain HTTP.
    with pytest.raises(AuthenticationException):
        Sandbox.list(api_key=key["key"]).next_items()
    r = httpx.get(f"{serve.api_url}/v2/sandboxes", headers={"X-API-Key": key["key"]})
    assert r.status_code == 401

    unknown = hutch(serve, "keys", "create", "--team", "no-such-team")
    assert unknown.returncode == 1 and "hutch: 404: Team 'no-such-team' not found" in unknown.stderr

    # Revoke: the revoked key answers 401.
    extra = json.loads(ok(serve, "keys", "create", "--json", "--name", "extra"))
    ok(serve, "keys", "revoke", extra["id"], *as_admin)
    r = httpx.get(f"{serve.api_url}/v2/sandboxes", headers={"X-API-Key": extra["key"]})
    assert r.status_code == 401
    again = hutch(serve, "keys", "revoke", extra["id"], *as_admin)
    assert again.returncode == 1 and "hutch: 404: id not found" in again.stderr
