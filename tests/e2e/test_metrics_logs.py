"""``get_metrics()`` and the ``/logs`` endpoints of a real ``hutch serve`` (ADR 0010)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from e2b import AsyncSandbox, ConnectionConfig, Sandbox, SandboxMetrics
from e2b.api.client.api.sandboxes import (
    get_sandboxes_metrics,
    get_sandboxes_sandbox_id_logs,
    get_v_2_sandboxes_sandbox_id_logs,
)
from e2b.api.client.models import LogLevel, LogsDirection
from e2b.api.client_sync import get_api_client

from .serveproc import Serve

pytestmark = pytest.mark.root

MIB = 2**20


def _poll(fetch, ok, *, attempts: int = 120, pause: float = 0.25):  # type: ignore[no-untyped-def]
    """``fetch()`` until ``ok(value)``; the last value (a count of tries, not a deadline)."""
    value = fetch()
    for _ in range(attempts):
        if ok(value):
            return value
        time.sleep(pause)
        value = fetch()
    return value


def _plausible(m: SandboxMetrics) -> None:
    assert m.cpu_count >= 1
    assert 0 <= m.cpu_used_pct <= 100
    assert 0 < m.mem_used <= m.mem_total
    assert m.mem_total >= 64 * MIB
    assert m.mem_cache >= 0
    assert 0 < m.disk_used < m.disk_total  # /etc/hosts and resolv.conf are in the upper dir


def test_get_metrics_samples_a_running_sandbox(serve: Serve) -> None:
    sbx = Sandbox.create("busybox", timeout=120)
    try:
        metrics = _poll(sbx.get_metrics, lambda ms: len(ms) >= 2)
        assert len(metrics) >= 2, metrics
        for m in metrics:
            _plausible(m)
        assert [m.timestamp for m in metrics] == sorted(m.timestamp for m in metrics)

        # Burn CPU and write 8 MiB: later samples see both.
        sbx.commands.run("dd if=/dev/urandom of=/tmp/blob bs=1M count=8 2>/dev/null; "
                         "(while :; do :; done) & sleep 3; kill $!")  # fmt: skip
        busy = _poll(
            sbx.get_metrics,
            lambda ms: (
                any(m.cpu_used_pct > 20 for m in ms)
                and ms[-1].disk_used >= metrics[0].disk_used + 8 * MIB
            ),
        )
        assert any(m.cpu_used_pct > 20 for m in busy), busy
        assert busy[-1].disk_used >= metrics[0].disk_used + 8 * MIB, busy[-1]

        # start / end select; the class variant agrees.
        later = datetime.now(UTC) + timedelta(hours=1)
        assert sbx.get_metrics(start=later) == []
        assert Sandbox.get_metrics(sbx.sandbox_id, end=metrics[0].timestamp + timedelta(seconds=1))
        assert len(Sandbox.get_metrics(sbx.sandbox_id)) >= len(busy)

        client = get_api_client(ConnectionConfig())
        many = get_sandboxes_metrics.sync_detailed(
            sandbox_ids=[sbx.sandbox_id, "nosuchsandbox"], client=client
        )
        assert many.status_code == 200
        assert set(many.parsed.sandboxes) == {sbx.sandbox_id}
        assert many.parsed.sandboxes[sbx.sandbox_id]["memTotal"] >= 64 * MIB
    finally:
        sbx.kill()


async def test_async_get_metrics(serve: Serve) -> None:
    import asyncio

    sbx = await AsyncSandbox.create("busybox", timeout=60)
    try:
        metrics = await sbx.get_metrics()
        for _ in range(120):
            if metrics:
                break
            await asyncio.sleep(0.25)
            metrics = await sbx.get_metrics()
        assert metrics
        _plausible(metrics[-1])
    finally:
        await sbx.kill()


@pytest.mark.compat("logs")
def test_logs_of_envd_v1_and_v2(serve: Serve) -> None:
    sbx = Sandbox.create("busybox", timeout=120)
    client = get_api_client(ConnectionConfig())
    try:
        first = sbx.commands.run("true", background=True)
        first.wait()
        marker = f"started pid {first.pid} "

        def v2(**kw):  # type: ignore[no-untyped-def]
            r = get_v_2_sandboxes_sandbox_id_logs.sync_detailed(sbx.sandbox_id, client=client, **kw)
            assert r.status_code == 200, r.content
            return r.parsed.logs

        entries = _poll(lambda: v2(search=marker), bool)
        assert len(entries) == 1, v2()
        assert entries[0].level.value == "info"
        # E2B's shape: envd's JSON line, every key but level and message as a field.
        fields = entries[0].fields.additional_properties
        assert set(fields) == {"logger", "timestamp"} and fields["logger"] == "process"
        assert datetime.fromisoformat(fields["timestamp"]) == entries[0].timestamp
        every = v2()
        assert len(every) >= 2  # uvicorn's start-up lines too
        assert [e.timestamp for e in every] == sorted(e.timestamp for e in every)
        assert v2(level=LogLevel.ERROR, search=marker) == []

        second = sbx.commands.run("true", background=True)
        second.wait()
        ended = f"pid {second.pid} ended: exit status 0"
        newest = _poll(lambda: v2(direction=LogsDirection.BACKWARD, limit=1),
                       lambda es: es and es[0].message == ended)  # fmt: skip
        assert newest[0].message == ended
        cursor = int(newest[0].timestamp.timestamp() * 1000)
        forward = v2(cursor=cursor)
        assert forward[-1].message == ended
        assert all(e.timestamp >= newest[0].timestamp for e in forward)
        older = v2(cursor=cursor - 1, direction=LogsDirection.BACKWARD)
        assert newest[0].message not in [e.message for e in older]
        assert marker in " ".join(e.message for e in older)

        v1 = get_sandboxes_sandbox_id_logs.sync_detailed(sbx.sandbox_id, client=client, limit=1)
        assert v1.status_code == 200
        assert len(v1.parsed.logs) == 1 and len(v1.parsed.log_entries) == 1
        # Every v1 line is a JSON object with level and message, as the e2b CLI parses it.
        v1 = get_sandboxes_sandbox_id_logs.sync_detailed(sbx.sandbox_id, client=client)
        raw = [json.loads(x.line) for x in v1.parsed.logs]
        assert [(x["level"], x["message"]) for x in raw] == [
            (e.level.value, e.message) for e in v1.parsed.log_entries
        ]
        assert any(x["message"].startswith(marker) and x["logger"] == "process" for x in raw)
    finally:
        sbx.kill()
    # Kept a while after the kill.
    r = httpx.get(
        f"{serve.api_url}/v2/sandboxes/{sbx.sandbox_id}/logs",
        params={"search": ended},
        headers={"X-API-Key": ConnectionConfig().api_key or ""},
    )
    assert r.status_code == 200 and len(r.json()["logs"]) == 1


@pytest.mark.parametrize("mode", ["full", "filesystem"])
def test_metrics_and_logs_across_pause_and_resume(serve: Serve, mode: str) -> None:
    sbx = Sandbox.create("busybox", timeout=120)
    try:
        before = _poll(sbx.get_metrics, bool)
        assert before
        assert sbx.pause(mode=mode) is True
        paused = Sandbox.get_metrics(sbx.sandbox_id)  # the kept samples, no error
        assert len(paused) >= len(before)
        if mode == "filesystem":  # no container: samples of its disk alone
            more = _poll(
                lambda: Sandbox.get_metrics(sbx.sandbox_id), lambda ms: len(ms) > len(paused)
            )
            assert len(more) > len(paused)
            assert (more[-1].mem_used, more[-1].cpu_used_pct) == (0, 0)
            assert more[-1].disk_used > 0
        again = Sandbox.connect(sbx.sandbox_id)
        n = len(Sandbox.get_metrics(sbx.sandbox_id))
        grown = _poll(again.get_metrics, lambda ms: len(ms) >= n + 2)
        assert len(grown) >= n + 2
        _plausible(grown[-1])
        r = httpx.get(
            f"{serve.api_url}/v2/sandboxes/{sbx.sandbox_id}/logs",
            headers={"X-API-Key": ConnectionConfig().api_key or ""},
        )
        assert r.status_code == 200 and r.json()["logs"]
    finally:
        sbx.kill()
