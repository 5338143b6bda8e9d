"""Two teams on one real ``hutch serve`` (issue 16): nothing of one is visible or changeable
to the other, through the official SDK and plain HTTP, for every resource.

Team A owns a running sandbox (with metadata and a volume mounted), a paused one, a
snapshot (a private template, with its build), and a volume with a file. Team B, with its
own key and its own sandbox, tries every route with A's ids: each answers 404 (never 403,
never 2xx), listings leave A's things out, and A's things are unchanged afterwards. Through
the proxy, A's sandbox id with B's envd token (or none) is refused by envd (401), while A's
own token works (so the refusals are not a broken route). Every check is first made with
A's key to show it succeeds, so a 404 is isolation and not a typo.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from e2b import (
    NotFoundException,
    Sandbox,
    SandboxException,
    SandboxQuery,
    SandboxState,
    Template,
    Volume,
)

from .serveproc import Serve

pytestmark = pytest.mark.root

ENVD_PORT = "49983"


def _hutch(serve: Serve, *args: str) -> str:
    argv = [sys.executable, "-m", "hutch", *args[:2], "--home", str(serve.home), *args[2:]]
    done = subprocess.run(argv, env=serve.env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@dataclass
class World:
    serve: Serve
    key_a: str
    key_b: str
    sandbox_a: Sandbox
    paused_a: str
    snapshot_a: str
    volume_a: Volume
    sandbox_b: Sandbox
    template_a: str
    build_a: str

    def api(self, key: str) -> httpx.Client:
        return httpx.Client(base_url=self.serve.api_url, headers={"X-API-Key": key}, timeout=60)


@pytest.fixture(scope="module")
def world(serve: Serve, monkeypatch_module: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch_module.setenv("E2B_VOLUME_API_URL", serve.api_url)
    admin = json.loads(_hutch(serve, "keys", "create", "--admin", "--json"))["key"]
    for name in ("iso-a", "iso-b"):
        _hutch(serve, "team", "create", name, "--api-key", admin)
    key_a = json.loads(_hutch(serve, "keys", "create", "--team", "iso-a", "--json"))["key"]
    key_b = json.loads(_hutch(serve, "keys", "create", "--team", "iso-b", "--json"))["key"]
    volume_a = Volume.create("iso-data", api_key=key_a)
    volume_a.write_file("/secret.txt", "a's data\n")
    sandbox_a = Sandbox.create(
        "busybox", api_key=key_a, timeout=300, metadata={"owner": "a"},
        volume_mounts={"/mnt/data": volume_a},
    )  # fmt: skip
    sandbox_a.files.write("/tmp/a.txt", "only a\n")
    paused = Sandbox.create("busybox", api_key=key_a, timeout=300)
    paused.pause()
    snapshot = sandbox_a.create_snapshot()
    built = Template.build(
        Template().from_template("busybox").run_cmd("echo a > /tmp/built.txt"),
        "iso-a-tpl", api_key=key_a,
    )  # fmt: skip
    sandbox_b = Sandbox.create("busybox", api_key=key_b, timeout=300)
    try:
        yield World(
            serve=serve, key_a=key_a, key_b=key_b, sandbox_a=sandbox_a,
            paused_a=paused.sandbox_id, snapshot_a=snapshot.snapshot_id, volume_a=volume_a,
            sandbox_b=sandbox_b, template_a=built.template_id, build_a=built.build_id,
        )  # fmt: skip
    finally:
        for team in ("iso-a", "iso-b"):
            _hutch(serve, "team", "delete", team, "--force", "--api-key", admin)


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def _routes(w: World) -> list[tuple[str, str, object]]:
    """Every API route that names one of A's things: (method, path, json body)."""
    sa, sp, snap, vol = w.sandbox_a.sandbox_id, w.paused_a, w.snapshot_a, w.volume_a.volume_id
    return [
        ("GET", f"/sandboxes/{sa}", None),
        ("POST", f"/sandboxes/{sa}/timeout", {"timeout": 600}),
        ("POST", f"/sandboxes/{sa}/refreshes", {"duration": 60}),
        ("POST", f"/sandboxes/{sa}/connect", {"timeout": 600}),
        ("POST", f"/v2/sandboxes/{sa}/connect", {"timeout": 600}),
        ("PATCH", f"/sandboxes/{sa}/metadata", {"owner": "b"}),
        ("GET", f"/sandboxes/{sa}/metrics", None),
        ("GET", f"/sandboxes/{sa}/logs", None),
        ("GET", f"/v2/sandboxes/{sa}/logs", None),
        ("POST", f"/sandboxes/{sa}/snapshots", {}),
        ("POST", f"/sandboxes/{sa}/fork", {}),
        ("POST", f"/sandboxes/{sa}/pause", None),
        ("POST", f"/sandboxes/{sp}/resume", {"timeout": 60}),
        ("POST", f"/sandboxes/{sp}/connect", {"timeout": 60}),
        ("GET", f"/sandboxes/{sp}", None),
        ("GET", f"/templates/{snap}", None),
        ("PATCH", f"/v2/templates/{snap}", {"public": True}),
        ("PATCH", f"/templates/{snap}", {"public": True}),
        ("GET", f"/templates/{snap}/tags", None),
        ("POST", "/templates/tags", {"target": f"{snap}:default", "tags": ["stolen"]}),
        ("POST", "/sandboxes", {"templateID": snap}),
        ("POST", "/v2/sandboxes", {"templateID": snap}),
        ("GET", f"/volumes/{vol}", None),
        ("GET", "/volumes/iso-data", None),
        ("DELETE", f"/sandboxes/{sa}", None),
        ("DELETE", f"/sandboxes/{sp}", None),
        ("DELETE", f"/templates/{snap}", None),
        ("DELETE", f"/snapshots/{snap}", None),
        ("DELETE", f"/volumes/{vol}", None),
    ]


def _build_routes(w: World) -> list[tuple[str, str, object]]:
    """A's built template and its build: the owner reads each (the control), B gets 404."""
    tpl = w.template_a
    base = f"/templates/{tpl}/builds/{w.build_a}"
    with w.api(w.key_a) as a:
        for path in (f"/templates/{tpl}", f"/templates/{tpl}/tags", f"{base}/status",
                     f"{base}/logs"):  # fmt: skip
            assert a.get(path).status_code == 200, (path, a.get(path).text)
    return [
        ("GET", f"/templates/{tpl}", None),
        ("GET", f"/templates/{tpl}/tags", None),
        ("GET", f"{base}/status", None),
        ("GET", f"{base}/logs", None),
        ("POST", f"/v2/templates/{tpl}/builds/{w.build_a}", {}),
        ("GET", f"/templates/{tpl}/files/{'0' * 64}", None),
        ("PATCH", f"/v2/templates/{tpl}", {"public": True}),
        ("POST", "/templates/tags", {"target": f"{tpl}:default", "tags": ["stolen"]}),
        ("POST", "/v2/sandboxes", {"templateID": tpl}),
        ("POST", "/v2/sandboxes", {"templateID": "iso-a-tpl"}),
        ("DELETE", f"/templates/{tpl}", None),
    ]


def test_every_route_with_another_teams_ids_is_404(world: World) -> None:
    w = world
    leaks = []
    with w.api(w.key_b) as b:
        for method, path, body in _routes(w) + _build_routes(w):
            r = b.request(method, path, json=body)
            if r.status_code != 404:
                leaks.append(f"{method} {path} -> {r.status_code} {r.text[:200]}")
            else:
                assert r.json()["code"] == 404, (method, path, r.text)
    assert not leaks, "\n".join(leaks)
    # A's things are as they were: running, its metadata, its file, its snapshot, its volume.
    info = Sandbox.get_info(w.sandbox_a.sandbox_id, api_key=w.key_a)
    assert info.state == SandboxState.RUNNING and info.metadata == {"owner": "a"}
    assert Sandbox.get_info(w.paused_a, api_key=w.key_a).state == SandboxState.PAUSED
    assert w.sandbox_a.files.read("/tmp/a.txt") == "only a\n"
    assert w.volume_a.read_file("/secret.txt") == "a's data\n"
    with w.api(w.key_a) as a:
        assert a.get(f"/templates/{w.template_a}").json()["public"] is False
        assert a.get(f"/templates/{w.snapshot_a}").status_code == 200
        assert a.get(f"/volumes/{w.volume_a.volume_id}").status_code == 200
        assert a.get(f"/sandboxes/{w.sandbox_a.sandbox_id}/metrics").status_code == 200


def test_the_owner_gets_2xx_on_the_read_routes(world: World) -> None:
    """The control for the test above: the same reads with A's key succeed."""
    w = world
    with w.api(w.key_a) as a:
        for method, path, _ in _routes(w):
            if method == "GET":
                r = a.get(path)
                assert r.status_code == 200, (path, r.status_code, r.text)


def test_listings_show_only_the_callers_team(world: World) -> None:
    w = world
    b_ids = {s.sandbox_id for s in Sandbox.list(api_key=w.key_b, query=SandboxQuery(
        state=[SandboxState.RUNNING, SandboxState.PAUSED])).next_items()}  # fmt: skip
    assert b_ids == {w.sandbox_b.sandbox_id}
    a_ids = {s.sandbox_id for s in Sandbox.list(api_key=w.key_a, query=SandboxQuery(
        state=[SandboxState.RUNNING, SandboxState.PAUSED])).next_items()}  # fmt: skip
    assert a_ids == {w.sandbox_a.sandbox_id, w.paused_a}
    assert [v.name for v in Volume.list(api_key=w.key_b)] == []
    assert [v.name for v in Volume.list(api_key=w.key_a)] == ["iso-data"]
    assert Sandbox.list_snapshots(api_key=w.key_b).next_items() == []
    assert [s.snapshot_id for s in Sandbox.list_snapshots(api_key=w.key_a).next_items()] == [
        w.snapshot_a
    ]
    with w.api(w.key_b) as b:
        assert w.snapshot_a not in {t["templateID"] for t in b.get("/templates").json()}
        assert w.snapshot_a not in {t["templateID"] for t in b.get("/v2/templates").json()}
        assert w.sandbox_a.sandbox_id not in b.get("/v2/sandboxes").text
        assert w.sandbox_a.sandbox_id not in b.get("/sandboxes").text
        r = b.get("/sandboxes/metrics", params={"sandbox_ids": w.sandbox_a.sandbox_id})
        assert r.status_code in (200, 404) and w.sandbox_a.sandbox_id not in r.text
        assert b.get("/snapshots", params={"sandboxID": w.sandbox_a.sandbox_id}).json() == []
        assert [k["name"] for k in b.get("/api-keys").json()] == [""]
    with w.api(w.key_a) as a:
        assert w.snapshot_a in {t["templateID"] for t in a.get("/templates").json()}


def test_the_sdk_cannot_reach_another_teams_things(world: World) -> None:
    w = world
    with pytest.raises(NotFoundException):
        Sandbox.connect(w.sandbox_a.sandbox_id, api_key=w.key_b)
    with pytest.raises(NotFoundException):
        Sandbox.get_info(w.sandbox_a.sandbox_id, api_key=w.key_b)
    with pytest.raises(SandboxException, match=r"^404: Template .* not found"):
        Sandbox.create(w.snapshot_a, api_key=w.key_b)
    assert Sandbox.kill(w.sandbox_a.sandbox_id, api_key=w.key_b) is False
    assert Sandbox.delete_snapshot(w.snapshot_a, api_key=w.key_b) is False
    with pytest.raises(Exception) as exc:  # the SDK's volume errors: NotFound
        Volume.connect(w.volume_a.volume_id, api_key=w.key_b)
    assert "not found" in str(exc.value).lower()
    assert Sandbox.get_info(w.sandbox_a.sandbox_id, api_key=w.key_a).state == SandboxState.RUNNING


def test_the_proxy_refuses_another_teams_token(world: World) -> None:
    """Files and commands through the proxy with A's sandbox id: B's envd token, or none,
    is refused by A's envd; A's own token works. (The id and token together are the
    sandbox's capability, as on E2B: B can get neither through the API.)"""
    w = world
    sa = w.sandbox_a.sandbox_id
    token_a = w.sandbox_a._envd_access_token
    token_b = w.sandbox_b._envd_access_token
    assert token_a and token_b and token_a != token_b

    def call(token: str | None) -> list[int]:
        headers = {"E2b-Sandbox-Id": sa, "E2b-Sandbox-Port": ENVD_PORT}
        if token is not None:
            headers["X-Access-Token"] = token
        with httpx.Client(base_url=w.serve.sandbox_url, headers=headers, timeout=30) as c:
            read = c.get("/files", params={"path": "/tmp/a.txt", "username": "user"})
            write = c.post("/files", params={"path": "/tmp/b.txt", "username": "user"},
                           files={"file": ("b.txt", b"from b")})  # fmt: skip
            listed = c.post("/process.Process/List", json={},
                            headers={"Content-Type": "application/json"})  # fmt: skip
            stat = c.post("/filesystem.Filesystem/Stat", json={"path": "/tmp/a.txt"},
                          headers={"Content-Type": "application/json"})  # fmt: skip
        if token == token_a:
            assert read.text == "only a\n"
        return [read.status_code, write.status_code, listed.status_code, stat.status_code]

    assert call(token_a) == [200, 200, 200, 200]
    assert call(token_b) == [401, 401, 401, 401]
    assert call(None) == [401, 401, 401, 401]
    # The write with A's token is the only one that landed.
    w.sandbox_a.files.remove("/tmp/b.txt")
    assert not w.sandbox_a.files.exists("/tmp/b.txt")


def test_volume_content_api_with_another_volumes_token(world: World) -> None:
    w = world
    with w.api(w.key_b) as b:
        mine = b.post("/volumes", json={"name": "iso-b-data"}).json()
    vol_a = w.volume_a.volume_id
    try:
        with httpx.Client(base_url=w.serve.api_url, timeout=30) as c:
            bearer = {"Authorization": f"Bearer {mine['token']}"}
            for method, path in (
                ("GET", f"/volumecontent/{vol_a}/file?path=/secret.txt"),
                ("GET", f"/volumecontent/{vol_a}/dir?path=/"),
                ("GET", f"/volumecontent/{vol_a}/path?path=/secret.txt"),
                ("DELETE", f"/volumecontent/{vol_a}/path?path=/secret.txt"),
                ("PUT", f"/volumecontent/{vol_a}/file?path=/x.txt"),
            ):
                r = c.request(
                    method, path, headers=bearer, content=b"x" if method == "PUT" else None
                )
                assert r.status_code == 404, (method, path, r.status_code, r.text)
            # The same token works on its own volume (the routes are right).
            r = c.get(f"/volumecontent/{mine['volumeID']}/dir?path=/", headers=bearer)
            assert r.status_code == 200, r.text
    finally:
        with w.api(w.key_b) as b:
            b.delete(f"/volumes/{mine['volumeID']}")
    assert w.volume_a.read_file("/secret.txt") == "a's data\n"
