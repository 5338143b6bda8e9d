"""Demand-sized warm pools (ADR 0038) through the official SDK and ``GET /hutch/status``:
a template that is started repeatedly gets a pool of its own and its creates are served
from it, idle members wait at a low CPU weight and a taken one runs at the normal one, the
pool drains when nobody starts the template any more, and a burst of concurrent creates
finishes with no error.

The session's ``hutch serve`` is restarted for this module with a floor of one ``busybox``
member and a short demand window, and restarted without a pool afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from e2b import Sandbox

from hutch.node import cpu_weight
from hutch.node.runtime.runc import RuncRuntime
from hutch.node.templates.busybox import build_busybox

from .serveproc import Serve

pytestmark = pytest.mark.root

#: The demand window: long enough for a test's creates, short enough to watch a drain.
WINDOW_S = 20
#: The second template, never named in HUTCH_NODE_POOL_SIZE.
SECOND = "second"
#: Concurrent creates of the burst test: 100 where the machine has the cores for it in the
#: test's time, at least 30 (issue 19 asks 100 with no error; bench/serve.py runs 100).
BURST = 100 if (os.cpu_count() or 1) >= 8 else 40


@pytest.fixture(scope="module")
def demand(serve: Serve) -> Iterator[Serve]:
    serve.stop()
    build_busybox(serve.home / "templates", name=SECOND)
    serve.extra_env = {
        "HUTCH_NODE_POOL_SIZE": "busybox=1",
        "HUTCH_NODE_POOL_WINDOW_S": str(WINDOW_S),
        "HUTCH_NODE_POOL_MAX_PER_TEMPLATE": "3",
        # Room to place the burst: 16 vCPUs a core by default (32 on 2 cores) would
        # refuse a burst of 40 one-vCPU sandboxes with 503s before any reached the node.
        "HUTCH_PLACEMENT_CPU_OVERCOMMIT": str(2 * BURST),
    }
    serve.start()
    try:
        yield serve
    finally:
        serve.extra_env = {}
        if serve.proc is not None:
            # Its row and its artifact go (seeded at the start, as any template on disk).
            httpx.delete(f"{serve.api_url}/templates/{SECOND}", headers=_auth(), timeout=30)
            serve.stop()
        shutil.rmtree(serve.home / "templates" / SECOND, ignore_errors=True)
        serve.start()


def _auth() -> dict[str, str]:
    return {"X-API-Key": os.environ["E2B_API_KEY"]}


def _fill(serve: Serve) -> dict[str, tuple[int, int]]:
    """``GET /hutch/status``'s pool: template -> (target, ready)."""
    response = httpx.get(
        f"{serve.api_url}/hutch/status",
        headers=_auth(),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return {p["templateID"]: (p["target"], p["ready"]) for p in response.json()["pool"]}


def _wait(predicate: Callable[[], object], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _host_id(serve: Serve, sandbox_id: str) -> str:
    for record in (serve.home / "sandboxes").glob("*/sandbox.json"):
        if json.loads(record.read_text())["sandbox_id"] == sandbox_id:
            return record.parent.name
    raise AssertionError(f"no record names {sandbox_id}")


def _idle_members(serve: Serve) -> list[str]:
    return sorted(
        d.name
        for d in (serve.home / "sandboxes").glob("pool-*")
        if not (d / "sandbox.json").exists()
    )


def _weight(serve: Serve, host_id: str) -> int:
    """The cgroup CPU weight (v2 scale) of the container ``host_id``."""
    runtime = RuncRuntime(root=serve.node_settings().runtime_root)
    pid = asyncio.run(runtime.state(host_id)).pid
    assert pid
    return cpu_weight.read_weight(cpu_weight.sandbox_dirs(pid, host_id))


def _create_at_once(n: int, template: str) -> list[Sandbox]:
    with ThreadPoolExecutor(n) as ex:
        return list(ex.map(lambda _: Sandbox.create(template, timeout=120), range(n)))


def _kill_all(sandboxes: list[Sandbox]) -> None:
    with ThreadPoolExecutor(8) as ex:
        list(ex.map(lambda s: s.kill(), sandboxes))


def test_a_template_started_repeatedly_gets_a_pool_that_serves_it(demand: Serve) -> None:
    _wait(lambda: _fill(demand).get("busybox") == (1, 1), "busybox's floor")
    assert SECOND not in _fill(demand)  # nobody asked for it: no pool
    first = _create_at_once(3, SECOND)
    try:
        assert all(_host_id(demand, s.sandbox_id) == s.sandbox_id for s in first)  # cold
    finally:
        _kill_all(first)
    # Three at once: the node now keeps three of it, beside busybox's floor.
    _wait(lambda: _fill(demand).get(SECOND) == (3, 3), "a pool of 3 for the second template")
    assert _fill(demand)["busybox"] == (1, 1)

    idle = _idle_members(demand)
    assert len(idle) == 4
    # Refilled but unclaimed: a low CPU weight (HUTCH_NODE_POOL_CPU_WEIGHT, 1).
    assert {_weight(demand, m) for m in idle} == {1}

    second = _create_at_once(3, SECOND)
    try:
        hosts = [_host_id(demand, s.sandbox_id) for s in second]
        assert all(h.startswith("pool-") and h in idle for h in hosts), hosts
        # Claimed: the normal weight, and it is the sandbox it was asked to be.
        assert {_weight(demand, h) for h in hosts} == {cpu_weight.NORMAL}
        for sbx in second:
            assert sbx.commands.run("hostname").stdout == f"{sbx.sandbox_id}\n"
    finally:
        _kill_all(second)
    _wait(lambda: _fill(demand).get(SECOND) == (3, 3), "the second template's refill")

    # Nobody starts it for the window: its pool drains, busybox keeps its floor.
    _wait(lambda: SECOND not in _fill(demand), "the drain", timeout=WINDOW_S + 40)
    _wait(lambda: len(_idle_members(demand)) == 1, "the drained members' removal")
    assert _fill(demand)["busybox"] == (1, 1)


def test_a_burst_of_concurrent_creates_finishes_with_no_error(demand: Serve) -> None:
    _wait(lambda: _fill(demand).get("busybox") == (1, 1), "busybox's floor")
    sandboxes: list[Sandbox] = []
    errors: list[BaseException] = []

    def one(_: int) -> None:
        try:
            sandboxes.append(Sandbox.create("busybox", timeout=300))
        except Exception as exc:  # every error is reported below
            errors.append(exc)

    try:
        with ThreadPoolExecutor(BURST) as ex:
            list(ex.map(one, range(BURST)))
        assert errors == []
        assert len(sandboxes) == BURST
        ids = {s.sandbox_id for s in sandboxes}
        assert len(ids) == BURST
        # Each answers as itself, the pooled one and the cold ones alike.
        for sbx in sandboxes[:: max(1, BURST // 8)]:
            assert sbx.commands.run("hostname").stdout == f"{sbx.sandbox_id}\n"
    finally:
        _kill_all(sandboxes)
    # The demand of the burst raised busybox's pool to the cap (3), and it refills.
    _wait(lambda: _fill(demand).get("busybox") == (3, 3), "busybox's pool after the burst")
