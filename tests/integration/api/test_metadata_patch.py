"""``PATCH /sandboxes/{id}/metadata`` over plain HTTP and as the SDK sees its effects (ADR 0005).

The node is ``FakeNodeClient``, which keeps its own copy of each sandbox's metadata: the
tests check that the store (what the API answers) and the node never disagree, including
when the node step fails and when 20 clients patch at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
from collections.abc import Awaitable, Callable
from urllib.parse import quote, urlencode

import httpx
import pytest
from e2b import Sandbox, SandboxQuery

from hutch.api.models import SandboxState
from hutch.api.store.sql import open_sql_store
from hutch.shared.errors import UnavailableError
from hutch.shared.ids import SandboxID
from tests.integration.api.conftest import ApiServer, _server_loop
from tests.integration.store.conftest import run_async


def _client(api: ApiServer, key: str | None = None) -> httpx.Client:
    return httpx.Client(base_url=api.url, headers={"X-API-Key": key or api.key}, timeout=30)


def _create(c: httpx.Client, metadata: dict[str, str] | None = None) -> str:
    r = c.post("/v2/sandboxes", json={"templateID": "base", "metadata": metadata or {}})
    assert r.status_code == 201, r.text
    return str(r.json()["sandboxID"])


def _filter(**pairs: str) -> str:
    """The metadata filter as the SDK encodes it (e2b-compat §2.1)."""
    return urlencode({quote(k): quote(v) for k, v in pairs.items()})


def _set_state(api: ApiServer, sandbox_id: str, state: SandboxState) -> None:
    async def run() -> None:
        store = await open_sql_store(api.database_url)
        try:
            await store.sandboxes.set_state(
                sandbox_id, team_id=None, expected=frozenset(SandboxState), new=state
            )
        finally:
            await store.close()

    run_async(run)


def _seam(api: ApiServer, fn: Callable[[SandboxID], Awaitable[None]] | None) -> None:
    api.app.state.ctx.metadata.between_steps = fn  # type: ignore[attr-defined]


def test_patch_merges_sets_and_removes(api: ApiServer) -> None:
    with _client(api) as c:
        sid = _create(c, {"keep": "1", "drop": "2", "blank": "3"})
        r = c.patch(f"/sandboxes/{sid}/metadata", json={"new": "n", "drop": None, "blank": ""})
        assert r.status_code == 200, r.text
        assert r.json() == {"keep": "1", "new": "n"}
        assert c.get(f"/sandboxes/{sid}").json()["metadata"] == {"keep": "1", "new": "n"}
        assert api.node.metadata[SandboxID(sid)] == {"keep": "1", "new": "n"}
        # An empty patch changes nothing and answers the map.
        assert c.patch(f"/sandboxes/{sid}/metadata", json={}).json() == {"keep": "1", "new": "n"}
        # Removing a key that is not there is fine.
        assert c.patch(f"/sandboxes/{sid}/metadata", json={"ghost": None}).status_code == 200


def test_patch_live_value_in_list_and_filter(api: ApiServer) -> None:
    with _client(api) as c:
        sid = _create(c, {"stage": "one"})
        c.patch(f"/sandboxes/{sid}/metadata", json={"stage": "two & more", "owner": "ana"})
        listed = {s["sandboxID"]: s for s in c.get("/v2/sandboxes").json()}
        assert listed[sid]["metadata"] == {"stage": "two & more", "owner": "ana"}
        old = c.get("/v2/sandboxes", params={"metadata": _filter(stage="one")}).json()
        assert [s["sandboxID"] for s in old] == []
        new = c.get("/v2/sandboxes", params={"metadata": _filter(stage="two & more")}).json()
        assert [s["sandboxID"] for s in new] == [sid]


def test_patch_effects_seen_by_the_sdk(sdk_env: ApiServer) -> None:
    sbx = Sandbox.create(metadata={"user": "u1", "task": "t1"})
    with _client(sdk_env) as c:
        c.patch(f"/sandboxes/{sbx.sandbox_id}/metadata", json={"task": "t2", "session": "s"})
    assert sbx.get_info().metadata == {"user": "u1", "task": "t2", "session": "s"}
    found = Sandbox.list(query=SandboxQuery(metadata={"task": "t2"})).next_items()
    assert [s.sandbox_id for s in found] == [sbx.sandbox_id]
    assert found[0].metadata == {"user": "u1", "task": "t2", "session": "s"}
    assert Sandbox.list(query=SandboxQuery(metadata={"task": "t1"})).next_items() == []


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ([1, 2], "object"),
        ("text", "object"),
        (None, "object"),
        ({"n": 1}, "metadata.n"),
        ({"b": True}, "metadata.b"),
        ({"o": {"x": "y"}}, "metadata.o"),
        ({"": "v"}, "empty"),
        ({"k" * 300: "v"}, "kkkk"),
        ({"big": "v" * 3000}, "metadata.big"),
        ({"nul": "a\x00b"}, "metadata.nul"),
        ({f"k{i}": "v" for i in range(101)}, "100 keys"),
    ],
)
def test_patch_bad_bodies_are_400_naming_the_key(api: ApiServer, body: object, named: str) -> None:
    with _client(api) as c:
        sid = _create(c, {"a": "1"})
        r = c.patch(f"/sandboxes/{sid}/metadata", content=json.dumps(body))
        assert r.status_code == 400, r.text
        assert named in r.json()["message"]
        assert c.get(f"/sandboxes/{sid}").json()["metadata"] == {"a": "1"}


def test_patch_not_json_is_400(api: ApiServer) -> None:
    with _client(api) as c:
        sid = _create(c)
        r = c.patch(f"/sandboxes/{sid}/metadata", content=b"{nope")
        assert r.status_code == 400 and "JSON" in r.json()["message"]


def test_patch_total_over_the_limit_is_400(api: ApiServer) -> None:
    with _client(api) as c:
        sid = _create(c, {f"k{i}": "v" for i in range(100)})
        r = c.patch(f"/sandboxes/{sid}/metadata", json={"one_more": "v"})
        assert r.status_code == 400 and "100 keys" in r.json()["message"]
        # Replacing and removing at the limit is fine.
        assert c.patch(f"/sandboxes/{sid}/metadata", json={"k0": "w", "k1": None}).is_success


def test_patch_unknown_other_team_and_killed_are_404(api: ApiServer) -> None:
    with _client(api) as c:
        assert c.patch("/sandboxes/iunknown000000000000/metadata", json={}).status_code == 404
        sid = _create(c)
        with _client(api, api.other_key) as other:
            r = other.patch(f"/sandboxes/{sid}/metadata", json={"x": "y"})
            assert r.status_code == 404
        assert c.get(f"/sandboxes/{sid}").json()["metadata"] == {}
        assert c.delete(f"/sandboxes/{sid}").status_code == 204
        assert c.patch(f"/sandboxes/{sid}/metadata", json={"x": "y"}).status_code == 404


@pytest.mark.parametrize(
    "state",
    [
        SandboxState.CREATING,
        SandboxState.PAUSING,
        SandboxState.PAUSED,
        SandboxState.RESUMING,
        SandboxState.KILLING,
    ],
)
def test_patch_of_a_sandbox_not_running_is_409_with_its_state(
    api: ApiServer, state: SandboxState
) -> None:
    with _client(api) as c:
        sid = _create(c, {"a": "1"})
        _set_state(api, sid, state)
        r = c.patch(f"/sandboxes/{sid}/metadata", json={"a": "2"})
        assert r.status_code == 409, r.text
        assert state.value in r.json()["message"]
        _set_state(api, sid, SandboxState.RUNNING)
        assert c.get(f"/sandboxes/{sid}").json()["metadata"] == {"a": "1"}
        assert api.node.metadata[SandboxID(sid)] == {"a": "1"}


def test_patch_node_failure_rolls_the_store_back(api: ApiServer) -> None:
    with _client(api) as c:
        sid = _create(c, {"a": "1", "b": "2"})
        api.node.fail_next_set_metadata = UnavailableError("node unreachable")
        r = c.patch(f"/sandboxes/{sid}/metadata", json={"a": "changed", "b": None, "c": "new"})
        assert r.status_code == 503
        assert c.get(f"/sandboxes/{sid}").json()["metadata"] == {"a": "1", "b": "2"}
        assert api.node.metadata[SandboxID(sid)] == {"a": "1", "b": "2"}
        # And the next patch works from the rolled-back state.
        r = c.patch(f"/sandboxes/{sid}/metadata", json={"c": "3"})
        assert r.json() == {"a": "1", "b": "2", "c": "3"}
        assert api.node.metadata[SandboxID(sid)] == {"a": "1", "b": "2", "c": "3"}


def test_patch_fault_between_the_steps_leaves_both_sides_unchanged(api: ApiServer) -> None:
    seen: list[dict[str, str]] = []

    async def fault(sandbox_id: SandboxID) -> None:
        # The store step is done: a reader sees the new value only until the rollback.
        seen.append(dict(api.node.metadata[sandbox_id]))
        raise RuntimeError("injected fault between the store and node steps")

    with _client(api) as c:
        sid = _create(c, {"a": "1"})
        _seam(api, fault)
        try:
            r = c.patch(f"/sandboxes/{sid}/metadata", json={"a": "2", "z": "9"})
        finally:
            _seam(api, None)
        assert r.status_code == 500
        assert seen == [{"a": "1"}]
    with _client(api) as c:  # the server closes a connection after a crash's 500
        assert c.get(f"/sandboxes/{sid}").json()["metadata"] == {"a": "1"}
        assert api.node.metadata[SandboxID(sid)] == {"a": "1"}


def test_patch_survives_the_client_hanging_up(api: ApiServer) -> None:
    """A client that disconnects mid-patch cannot leave store and node apart."""
    release = asyncio.Event()
    entered = concurrent.futures.Future[None]()

    async def slow(sandbox_id: SandboxID) -> None:
        entered.set_result(None)
        await release.wait()

    with _client(api) as c:
        sid = _create(c, {"a": "1"})
        _seam(api, slow)
        try:
            with pytest.raises(httpx.ReadTimeout):
                c.patch(f"/sandboxes/{sid}/metadata", json={"a": "2"}, timeout=0.5)
            entered.result(timeout=30)
            _server_loop(api).call_soon_threadsafe(release.set)
        finally:
            _seam(api, None)
        # The patch finished on the server (the second one queues behind it on the lock).
        final = c.patch(f"/sandboxes/{sid}/metadata", json={}).json()
        assert final == {"a": "2"}
        assert api.node.metadata[SandboxID(sid)] == {"a": "2"}


def test_twenty_concurrent_patchers_end_with_the_union(api: ApiServer) -> None:
    with _client(api) as c:
        sid = _create(c, {"base": "0", **{f"gone{i}": "x" for i in range(20)}})

    def patch(i: int) -> int:
        with _client(api) as c:
            body = {f"k{i}": str(i), f"gone{i}": None, "shared": str(i)}
            return c.patch(f"/sandboxes/{sid}/metadata", json=body).status_code

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(patch, range(20)))
    assert codes == [200] * 20
    with _client(api) as c:
        final = c.get(f"/sandboxes/{sid}").json()["metadata"]
    assert api.node.metadata[SandboxID(sid)] == final
    assert final.pop("shared") in {str(i) for i in range(20)}
    assert final == {"base": "0", **{f"k{i}": str(i) for i in range(20)}}
