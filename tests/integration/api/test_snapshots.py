"""Snapshots and fork through the API with the fake node (the real files: e2e/test_snapshots.py)."""

from __future__ import annotations

import httpx
from e2b import Sandbox

from hutch.shared.errors import HutchError
from hutch.shared.ids import SandboxID
from tests.integration.api.conftest import ApiServer


def _client(api: ApiServer, key: str | None = None) -> httpx.Client:
    return httpx.Client(base_url=api.url, headers={"X-API-Key": key or api.key}, timeout=30)


def test_snapshot_create_from_it_list_and_delete_with_the_sdk(sdk_env: ApiServer) -> None:
    sbx = Sandbox.create(metadata={"k": "v"})
    info = sbx.create_snapshot("my-snap")
    assert info.snapshot_id.startswith("snap-") and info.names == ["my-snap"]
    assert sdk_env.node.snapshots[info.snapshot_id] == sbx.sandbox_id
    # Like a template name, as often as wanted; by id and by name.
    one = Sandbox.create(info.snapshot_id)
    two = Sandbox.create("my-snap")
    assert one.get_info().template_id == info.snapshot_id == two.get_info().template_id
    listed = sbx.list_snapshots().next_items()
    assert [s.snapshot_id for s in listed] == [info.snapshot_id]
    assert [s.snapshot_id for s in Sandbox.list_snapshots().next_items()] == [info.snapshot_id]
    assert Sandbox.list_snapshots(sandbox_id=one.sandbox_id).next_items() == []
    assert Sandbox.delete_snapshot(info.snapshot_id) is True
    assert Sandbox.delete_snapshot(info.snapshot_id) is False
    assert info.snapshot_id not in sdk_env.node.snapshots
    assert Sandbox.list_snapshots().next_items() == []


def test_snapshot_errors(api: ApiServer) -> None:
    with _client(api) as c:
        sid = c.post("/v2/sandboxes", json={"templateID": "base"}).json()["sandboxID"]
        assert c.post("/sandboxes/iunknown0000000000/snapshots", json={}).status_code == 404
        with _client(api, api.other_key) as other:
            assert other.post(f"/sandboxes/{sid}/snapshots", json={}).status_code == 404
        r = c.post(f"/sandboxes/{sid}/snapshots", json={"name": "Bad Name!"})
        assert r.status_code == 400 and "name" in r.json()["message"]
        assert c.post(f"/sandboxes/{sid}/snapshots", json={"name": "base"}).status_code == 409
        api.node.fail_next_snapshot = HutchError("disk full")
        assert c.post(f"/sandboxes/{sid}/snapshots", json={"name": "s1"}).status_code == 500
        assert c.get("/snapshots").json() == []
        r = c.post(f"/sandboxes/{sid}/snapshots", json={"name": "s1"})
        assert r.status_code == 201 and r.headers["hutch-snapshot"] == "filesystem"
        # Paused sandboxes can be snapshotted too.
        c.post(f"/sandboxes/{sid}/pause")
        assert c.post(f"/sandboxes/{sid}/snapshots", json={}).status_code == 201
        assert len(c.get("/snapshots", params={"sandboxID": sid}).json()) == 2
        page = c.get("/snapshots", params={"limit": 1})
        assert len(page.json()) == 1 and page.headers["x-next-token"]
        rest = c.get("/snapshots", params={"limit": 1, "nextToken": page.headers["x-next-token"]})
        assert len(rest.json()) == 1 and rest.json() != page.json()
        assert c.get("/snapshots", params={"name": "s1"}).json()[0]["names"] == ["s1"]


def test_fork_makes_n_copies_with_the_live_metadata(sdk_env: ApiServer) -> None:
    sbx = Sandbox.create(metadata={"a": "1"}, envs={"E": "x"})
    with _client(sdk_env) as c:
        c.patch(f"/sandboxes/{sbx.sandbox_id}/metadata", json={"b": "2"})
    forks = sbx.fork(count=3, timeout=60)
    assert len(forks) == 3 and all(isinstance(f, Sandbox) for f in forks)
    ids = {f.sandbox_id for f in forks}
    assert len(ids) == 3 and sbx.sandbox_id not in ids
    for f in forks:
        assert isinstance(f, Sandbox)
        assert f.get_info().metadata == {"a": "1", "b": "2"}
        assert sdk_env.node.running[SandboxID(f.sandbox_id)].env_vars == {"E": "x"}
    assert sbx.get_info().state.value == "running"


def test_fork_errors(api: ApiServer) -> None:
    with _client(api) as c:
        sid = c.post("/v2/sandboxes", json={"templateID": "base"}).json()["sandboxID"]
        assert c.post(f"/sandboxes/{sid}/fork", json={"count": 0}).status_code == 400
        assert c.post(f"/sandboxes/{sid}/fork", json={"count": 21}).status_code == 400
        c.post(f"/sandboxes/{sid}/pause")
        assert c.post(f"/sandboxes/{sid}/fork", json={}).status_code == 409
        c.post(f"/v2/sandboxes/{sid}/connect", json={})
        api.node.capacity = len(api.node.running) + 1
        r = c.post(f"/sandboxes/{sid}/fork", json={"count": 2})
        assert r.status_code == 201
        outcomes = sorted(str(x["error"]["code"]) if "error" in x else "sandbox" for x in r.json())
        assert outcomes == ["503", "sandbox"]
        [failed] = [x["error"] for x in r.json() if "error" in x]
        assert failed["error_code"] == "sandbox_capacity_unavailable"
