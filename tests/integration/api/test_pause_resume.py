"""Pause, connect, resume and auto-pause over HTTP and the SDK, with the fake node (ADR 0004).

The real freeze/thaw, boot ids and processes are tested end to end in
``tests/e2e/test_pause.py``; these check the API's answers and state machine.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from datetime import UTC, datetime, timedelta

import httpx
from e2b import Sandbox, SandboxQuery, SandboxState

from hutch.shared.errors import UnavailableError
from hutch.shared.ids import SandboxID
from tests.integration.api.conftest import ApiServer, _server_loop, reap_now


def _client(api: ApiServer, key: str | None = None) -> httpx.Client:
    return httpx.Client(base_url=api.url, headers={"X-API-Key": key or api.key}, timeout=30)


def _create(c: httpx.Client, **body: object) -> str:
    r = c.post("/v2/sandboxes", json={"templateID": "base", **body})
    assert r.status_code == 201, r.text
    return str(r.json()["sandboxID"])


def test_pause_then_connect_resumes_with_201(api: ApiServer) -> None:
    with _client(api) as c:
        sid = _create(c, metadata={"k": "v"})
        assert c.post(f"/sandboxes/{sid}/pause").status_code == 204
        detail = c.get(f"/sandboxes/{sid}").json()
        assert detail["state"] == "paused" and detail["pauseMode"] == "full"
        assert [s["state"] for s in c.get("/v2/sandboxes").json()] == ["paused"]
        assert c.get("/v2/sandboxes", params={"state": "running"}).json() == []
        r = c.post(f"/v2/sandboxes/{sid}/connect", json={"timeout": 100})
        assert r.status_code == 201 and r.headers["hutch-resume"] == "memory"
        detail = c.get(f"/sandboxes/{sid}").json()
        assert detail["state"] == "running" and detail["metadata"] == {"k": "v"}
        # Connect to a running sandbox: 200, no resume.
        r = c.post(f"/v2/sandboxes/{sid}/connect", json={})
        assert r.status_code == 200 and "hutch-resume" not in r.headers
        assert api.node.resumes == [SandboxID(sid)]


def test_pause_twice_is_409_and_sdk_pause_says_false(sdk_env: ApiServer) -> None:
    sbx = Sandbox.create()
    assert sbx.pause() is True
    assert sbx.pause() is False
    with _client(sdk_env) as c:
        r = c.post(f"/sandboxes/{sbx.sandbox_id}/pause")
        assert r.status_code == 409 and "already paused" in r.json()["message"]
    paused = Sandbox.list(query=SandboxQuery(state=[SandboxState.PAUSED])).next_items()
    assert [s.sandbox_id for s in paused] == [sbx.sandbox_id]
    assert Sandbox.connect(sbx.sandbox_id).get_info().state == SandboxState.RUNNING


def test_deprecated_resume(api: ApiServer) -> None:
    with _client(api) as c:
        sid = _create(c)
        r = c.post(f"/sandboxes/{sid}/resume", json={})
        assert r.status_code == 409 and "already running" in r.json()["message"]
        c.post(f"/sandboxes/{sid}/pause")
        r = c.post(f"/sandboxes/{sid}/resume", json={"timeout": 30})
        assert r.status_code == 201 and r.json()["sandboxID"] == sid
        detail = c.get(f"/sandboxes/{sid}").json()
        end = datetime.fromisoformat(detail["endAt"])
        assert timedelta(seconds=0) < end - datetime.now(UTC) <= timedelta(seconds=31)


def test_pause_and_connect_of_unknown_other_team_killed_are_404(api: ApiServer) -> None:
    with _client(api) as c:
        sid = _create(c)
        with _client(api, api.other_key) as other:
            assert other.post(f"/sandboxes/{sid}/pause").status_code == 404
            assert other.post(f"/v2/sandboxes/{sid}/connect", json={}).status_code == 404
        assert c.post("/sandboxes/iunknown00000000000/pause").status_code == 404
        c.post(f"/sandboxes/{sid}/pause")
        assert c.delete(f"/sandboxes/{sid}").status_code == 204  # paused ones can be killed
        assert SandboxID(sid) not in api.node.running
        assert c.post(f"/sandboxes/{sid}/pause").status_code == 404
        assert c.post(f"/v2/sandboxes/{sid}/connect", json={}).status_code == 404
        assert c.post(f"/sandboxes/{sid}/resume", json={}).status_code == 404


def test_filesystem_pause_when_memory_is_not_kept(api: ApiServer) -> None:
    api.node.keeps_memory = False
    with _client(api) as c:
        sid = _create(c)
        c.post(f"/sandboxes/{sid}/pause", json={"memory": True})
        assert c.get(f"/sandboxes/{sid}").json()["pauseMode"] == "filesystem"
        r = c.post(f"/v2/sandboxes/{sid}/connect", json={})
        assert r.status_code == 201 and r.headers["hutch-resume"] == "filesystem"


def test_pause_node_failure_leaves_it_running(api: ApiServer) -> None:
    with _client(api) as c:
        sid = _create(c)
        api.node.fail_next_pause = UnavailableError("node away")
        assert c.post(f"/sandboxes/{sid}/pause").status_code == 503
        assert c.get(f"/sandboxes/{sid}").json()["state"] == "running"
        assert c.post(f"/sandboxes/{sid}/pause").status_code == 204


def test_patch_of_a_paused_sandbox_is_409(api: ApiServer) -> None:
    with _client(api) as c:
        sid = _create(c, metadata={"a": "1"})
        c.post(f"/sandboxes/{sid}/pause")
        r = c.patch(f"/sandboxes/{sid}/metadata", json={"a": "2"})
        assert r.status_code == 409 and "paused" in r.json()["message"]


def test_two_connects_at_once_resume_once(api: ApiServer) -> None:
    with _client(api) as c:
        sid = _create(c)
        c.post(f"/sandboxes/{sid}/pause")
    gate = asyncio.Event()
    api.node.resume_gate = gate

    def connect() -> int:
        with _client(api) as c:
            return c.post(f"/v2/sandboxes/{sid}/connect", json={}).status_code

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(connect) for _ in range(2)]
        _server_loop(api).call_later(0.3, gate.set)
        codes = sorted(f.result(timeout=30) for f in futures)
    assert codes == [200, 201]
    assert api.node.resumes == [SandboxID(sid)]


def test_kill_during_pause_waits_and_kills(api: ApiServer) -> None:
    with _client(api) as c:
        sid = _create(c)
    gate = asyncio.Event()
    api.node.pause_gate = gate

    def call(method: str, path: str) -> int:
        with _client(api) as c:
            return c.request(method, path).status_code

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        paused = pool.submit(call, "POST", f"/sandboxes/{sid}/pause")
        with _client(api) as c:  # wait until the pause is under way (row ``pausing``)
            while c.get(f"/sandboxes/{sid}").json()["state"] != "paused":
                pass
        killed = pool.submit(call, "DELETE", f"/sandboxes/{sid}")
        _server_loop(api).call_later(0.3, gate.set)
        assert paused.result(timeout=30) == 204
        assert killed.result(timeout=30) == 204
    with _client(api) as c:
        assert c.get(f"/sandboxes/{sid}").status_code == 404
    assert SandboxID(sid) not in api.node.running


def test_auto_pause_on_timeout_then_connect(api: ApiServer) -> None:
    with _client(api) as c:
        sid = _create(c, autoPause=True, timeout=30)
        kept = _create(c, timeout=30)
        detail = c.get(f"/sandboxes/{sid}").json()
        assert detail["lifecycle"] == {"autoResume": True, "onTimeout": "pause"}
        reap_now(api, datetime.now(UTC) + timedelta(seconds=60))
        assert c.get(f"/sandboxes/{sid}").json()["state"] == "paused"
        assert c.get(f"/sandboxes/{kept}").status_code == 404  # no autoPause: killed
        r = c.post(f"/v2/sandboxes/{sid}/connect", json={"timeout": 60})
        assert r.status_code == 201


def test_auto_pause_memory_false_pauses_the_filesystem_only(api: ApiServer) -> None:
    """``autoPauseMemory: false``: the timeout's pause keeps files only, no auto-resume by
    default, and connect resumes it (a reboot: memory not kept)."""
    with _client(api) as c:
        sid = _create(c, autoPause=True, autoPauseMemory=False, timeout=30)
        detail = c.get(f"/sandboxes/{sid}").json()
        assert detail["lifecycle"] == {"autoResume": False, "onTimeout": "pause"}
        reap_now(api, datetime.now(UTC) + timedelta(seconds=60))
        detail = c.get(f"/sandboxes/{sid}").json()
        assert detail["state"] == "paused" and detail["pauseMode"] == "filesystem"
        assert api.node.paused[SandboxID(sid)] == "filesystem"
        r = c.post(f"/v2/sandboxes/{sid}/connect", json={"timeout": 60})
        assert r.status_code == 201 and r.headers["hutch-resume"] == "filesystem"


def test_auto_pause_memory_false_is_refused_where_e2b_refuses_it(api: ApiServer) -> None:
    with _client(api) as c:
        for body, says in (
            ({"autoPauseMemory": False}, "only applies when autoPause is true"),
            ({"autoPause": False, "autoPauseMemory": False}, "only applies when autoPause"),
            (
                {"autoPause": True, "autoPauseMemory": False, "autoResume": {"enabled": True}},
                "cannot be combined with autoResume",
            ),
        ):
            r = c.post("/v2/sandboxes", json={"templateID": "base", **body})
            assert r.status_code == 400, (body, r.text)
            assert says in r.json()["message"]
    assert api.node.running == {}


def test_set_timeout_zero_pauses_at_once_without_waiting_for_the_reaper(
    sdk_env: ApiServer,
) -> None:
    """The reaper ticks hourly in these tests: only ``set_timeout(0)``'s nudge can have
    paused the sandbox (gap 6), keeping memory with ``keep_memory`` unset."""
    for on_timeout, mode in (
        ({"action": "pause", "keep_memory": None}, "full"),
        ({"action": "pause", "keep_memory": False}, "filesystem"),
        ("kill", None),
    ):
        sbx = Sandbox.create(lifecycle={"on_timeout": on_timeout})
        sbx.set_timeout(0)
        with _client(sdk_env) as c:
            deadline = time.monotonic() + 60
            while True:
                r = c.get(f"/sandboxes/{sbx.sandbox_id}")
                if mode is None and r.status_code == 404:
                    break
                if mode is not None and r.json()["state"] == "paused":
                    assert r.json()["pauseMode"] == mode
                    break
                assert time.monotonic() < deadline, r.text
                time.sleep(0.02)
        if mode is not None:
            assert sdk_env.node.paused[SandboxID(sbx.sandbox_id)] == mode
            assert Sandbox.connect(sbx.sandbox_id).get_info().state == SandboxState.RUNNING
