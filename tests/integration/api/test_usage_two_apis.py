"""Team usage across apis (issue 11): two real apis (uvicorn, each its own store, elector and
sampler) on one PostgreSQL. Only the leader samples; the series and peak asked of the other
api are the leader's, and when the leader stops the other takes over with the history."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from hutch.api.app import create_app
from hutch.api.settings import ApiSettings
from tests.conftest import free_port
from tests.fakes.node import FakeNodeClient
from tests.integration.api.conftest import PostgresDatabases, _seed, run_async


@contextmanager
def _api(url: str, home: Path) -> Iterator[tuple[str, Any, uvicorn.Server, threading.Thread]]:
    port = free_port()
    cfg = ApiSettings(home=home, database_url=url, api_host="127.0.0.1", api_port=port,
                      reaper_interval_s=3600, usage_interval_s=0.1,
                      leader_interval_s=0.1)  # fmt: skip
    app = create_app(cfg, node=FakeNodeClient())
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the api did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", app, server, thread
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _until(predicate: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + 30
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)
    return value


def test_every_api_answers_the_leaders_series_and_a_new_leader_keeps_it(
    postgres_databases: PostgresDatabases, tmp_path: Path
) -> None:
    url = postgres_databases.create()
    key, team_id, _other, _admin = run_async(lambda: _seed(url))
    headers = {"X-API-Key": key}
    start = int(time.time()) - 1
    with ExitStack() as stack:
        apis = [stack.enter_context(_api(url, tmp_path / name)) for name in ("a", "b")]
        leading = _until(lambda: [a for a in apis if a[1].state.leader.is_leader], "one leads")
        assert len(leading) == 1
        leader = leading[0]
        [follower] = [a for a in apis if a is not leader]
        assert "usage" in leader[1].state.leader.running()
        assert follower[1].state.leader.running() == []

        def series(api: str, end: int | None = None) -> list[dict[str, Any]]:
            params = {"start": start, **({"end": end} if end is not None else {})}
            r = httpx.get(f"{api}/teams/{team_id}/metrics", params=params, headers=headers)
            assert r.status_code == 200, r.text
            return list(r.json())

        def peak(api: str, end: int) -> dict[str, Any]:
            params = {"start": start, "end": end, "metric": "concurrent_sandboxes"}
            r = httpx.get(f"{api}/teams/{team_id}/metrics/max", params=params, headers=headers)
            assert r.status_code == 200, r.text
            return dict(r.json())

        # Two sandboxes made through the follower; the leader's sampler counts them.
        for _ in range(2):
            r = httpx.post(f"{follower[0]}/sandboxes", json={"templateID": "base"},
                           headers=headers, timeout=30)  # fmt: skip
            assert r.status_code == 201, r.text
        two = _until(
            lambda: [p for p in series(follower[0]) if p["concurrentSandboxes"] == 2],
            "the follower answers a sample of the two sandboxes",
        )
        # A closed window (a later sample exists, so every sample in it is written).
        end = two[0]["timestampUnix"] + 1
        _until(lambda: series(leader[0])[-1]["timestampUnix"] > end, "a sample after the window")
        seen = series(leader[0], end)
        assert seen and seen == series(follower[0], end)
        assert max(p["concurrentSandboxes"] for p in seen) == 2
        top = peak(leader[0], end)
        assert top["value"] == 2 and peak(follower[0], end) == top
        times = [datetime.fromisoformat(p["timestamp"]) for p in seen]
        assert times == sorted(times) and len(set(times)) == len(times)  # one sampler wrote

        # The leader stops: the follower leads, keeps the history, and samples on.
        leader[2].should_exit = True
        leader[3].join(timeout=30)
        assert not leader[3].is_alive()
        _until(lambda: follower[1].state.leader.is_leader, "the follower takes over")
        assert series(follower[0], end) == seen
        assert peak(follower[0], end) == top
        later = _until(
            lambda: [p for p in series(follower[0]) if p["timestampUnix"] > end + 1],
            "the new leader samples",
        )
        assert later[-1]["concurrentSandboxes"] == 2
