"""``HttpNodeClient`` against the real node API over a Unix socket (fakes below the service).

What crosses the wire: every ``NodeClient`` call with its arguments and answers, the error
tree (class, message, public message, retryability), the cluster token, and streams that
arrive while the node still works (not buffered to the end).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from hutch.api.nodes.http_client import HttpNodeClient
from hutch.api.service.ports import (
    BuildFailedError,
    ImageImport,
    SandboxSpec,
    VolumeMountSpec,
)
from hutch.shared.errors import (
    AlreadyExistsError,
    ImageError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
)
from hutch.shared.ids import SandboxID, TeamID, TemplateID
from tests.integration.nodewire.conftest import TOKEN, WiredNode


def spec(sid: str, *, template: str = "busybox", **kw: object) -> SandboxSpec:
    return SandboxSpec(
        sandbox_id=SandboxID(sid), team_id=TeamID("t"), template_id=TemplateID(template),
        cpu_count=2, memory_mb=256, disk_mb=1024, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


async def test_http_client_node_info_names_the_node(node_client: HttpNodeClient) -> None:
    assert node_client.node_id == "node-a"
    assert (node_client.info.version, node_client.info.api_version) == ("9.9", "v1")


async def test_http_client_create_list_metadata_metrics_logs_kill(
    wired_node: WiredNode, node_client: HttpNodeClient
) -> None:
    placed = await node_client.create(
        spec("sbx1", env_vars={"A": "1"}, envd_access_token="tok", metadata={"k": "v"})
    )
    assert (placed.sandbox_id, placed.node_id, placed.address) == ("sbx1", "node-a", "10.99.0.2")
    request = wired_node.sandboxes.requests[-1]
    assert (request.template, request.cpu_count, request.memory_mb) == ("busybox", 2, 256)
    assert (dict(request.env_vars), request.access_token) == ({"A": "1"}, "tok")
    assert dict(request.metadata) == {"k": "v"}
    assert await node_client.list_running() == ["sbx1"]

    await node_client.set_metadata(SandboxID("sbx1"), {"k": "w", "x": "y"})
    assert dict(wired_node.sandboxes.running["sbx1"].metadata) == {"k": "w", "x": "y"}

    samples = await node_client.metrics(
        SandboxID("sbx1"), start=datetime.fromtimestamp(1001, tz=UTC), end=None
    )
    assert [s.timestamp.timestamp() for s in samples] == [1001.0, 1002.0]
    assert samples[0].cpu_used_pct == 2.5 and samples[0].mem_total == 512 << 20

    lines = await node_client.logs(SandboxID("sbx1"))
    assert [line.message for line in lines] == ["envd of sbx1"]

    await node_client.kill(SandboxID("sbx1"))
    await node_client.kill(SandboxID("sbx1"))  # idempotent
    assert await node_client.list_running() == []
    # The killed sandbox's log tail is still answered (kept by the node).
    assert [line.message for line in await node_client.logs(SandboxID("sbx1"))] == ["envd of sbx1"]


async def test_http_client_status_counts_the_node_load(
    wired_node: WiredNode, node_client: HttpNodeClient
) -> None:
    await node_client.create(spec("load1"))
    await node_client.create(spec("load2"))
    await node_client.pause(SandboxID("load2"), keep_memory=True)
    status = await node_client.status()
    assert (status.node_id, status.runtime, status.max_sandboxes) == ("node-a", "fake", 3)
    assert (status.running, status.paused) == (1, 1)
    assert (status.allocated_cpu, status.allocated_memory_mb) == (4, 512)
    assert status.host_cpu_count >= 1 and status.host_memory_mb > 0
    assert [(p.template, p.target, p.ready) for p in status.pool] == [("base", 2, 0)]


async def test_http_client_pause_resume_snapshot(
    wired_node: WiredNode, node_client: HttpNodeClient
) -> None:
    await node_client.create(spec("sbx2"))
    assert await node_client.pause(SandboxID("sbx2"), keep_memory=True) is True
    resumed = await node_client.resume(spec("sbx2"), keep_memory=True)
    assert (resumed.memory_kept, resumed.placed.address) == (True, "10.99.1.1")
    await node_client.snapshot(SandboxID("sbx2"), snapshot_id=TemplateID("snap1"))
    assert "snap1" in wired_node.sandboxes.templates
    assert wired_node.templates.published == ["snap1"]  # to the artifact directory, if any
    await node_client.delete_snapshot(TemplateID("snap1"))
    assert wired_node.templates.deleted == ["snap1"]
    with pytest.raises(NotFoundError):
        await node_client.pause(SandboxID("nosuch"), keep_memory=False)


async def test_http_client_reconcile_reports_adopted_and_removed(
    wired_node: WiredNode, node_client: HttpNodeClient
) -> None:
    for sid in ("keep1", "gone1", "paus1"):
        await node_client.create(spec(sid, metadata={"id": sid}))
    await node_client.pause(SandboxID("paus1"), keep_memory=True)
    report = await node_client.reconcile(
        [SandboxID("keep1"), SandboxID("lost1")], paused=[SandboxID("paus1")]
    )
    assert list(report.removed) == ["gone1"]
    assert sorted(report.adopted) == ["keep1", "paus1"]
    placed, metadata, mode = report.adopted[SandboxID("paus1")]
    assert (placed.node_id, dict(metadata), mode) == ("node-a", {"id": "paus1"}, "full")
    assert report.adopted[SandboxID("keep1")][2] is None


async def test_http_client_volume_mounts_become_bind_mounts(
    wired_node: WiredNode, node_client: HttpNodeClient
) -> None:
    vid = "vol00000000000000000001"
    mount = VolumeMountSpec(volume_id=vid, backend="local", path="/data")
    # Not created on this node: refused as a volume whose data is elsewhere (ADR 0034).
    with pytest.raises(UnavailableError, match="its data is not on node node-a") as refused:
        await node_client.create(spec("sbx2", volume_mounts=(mount,)))
    assert refused.value.error_code == "volume_node_unavailable"
    await node_client.volumes.create(vid, quota_bytes=8 << 20)
    assert wired_node.volumes.created == {vid: 8 << 20}
    await node_client.create(spec("sbx3", volume_mounts=(mount,)))
    binds = list(wired_node.sandboxes.requests[-1].volume_mounts)
    assert binds == [(wired_node.volumes.root / vid, "/data")]
    s3 = VolumeMountSpec(volume_id="vol2", backend="s3", path="/data")
    with pytest.raises(InvalidArgumentError, match="cannot be mounted here"):
        await node_client.create(spec("sbx4", volume_mounts=(s3,)))


async def test_http_client_node_errors_arrive_as_the_same_classes(
    wired_node: WiredNode, node_client: HttpNodeClient
) -> None:
    # The node's own TemplateNotFoundError crosses as its shared class, message intact.
    with pytest.raises(NotFoundError, match="template 'nosuch' is not on this node"):
        await node_client.create(spec("sbx5", template="nosuch"))
    await node_client.create(spec("sbx5"))
    with pytest.raises(AlreadyExistsError):
        await node_client.create(spec("sbx5"))
    await node_client.create(spec("sbx6"))
    await node_client.create(spec("sbx7"))
    with pytest.raises(ResourceExhaustedError) as full:
        await node_client.create(spec("sbx8"))
    assert full.value.public_message == "this node runs as many sandboxes as it may"
    wired_node.sandboxes.fail_next = UnavailableError("runtime busy")
    with pytest.raises(UnavailableError) as busy:
        await node_client.create(spec("sbx9"))
    assert busy.value.retryable is True
    with pytest.raises(InvalidArgumentError, match="sandbox_id"):  # a bad body: 400
        await node_client._call("POST", "/sandboxes", body=None)


async def test_http_client_wrong_or_missing_token_is_unauthenticated(
    wired_node: WiredNode,
) -> None:
    for token in ("wrong", None, ""):
        with pytest.raises(UnauthenticatedError, match="cluster token"):
            await wired_node.client(token=token)
    async with httpx.AsyncClient(transport=wired_node.transport()) as raw:
        response = await raw.get("http://node/v1/sandboxes")
    assert response.status_code == 401
    assert response.json()["error"] == "UnauthenticatedError"


async def test_http_client_unreachable_node_is_unavailable_and_retryable(tmp_path: Path) -> None:
    transport = httpx.AsyncHTTPTransport(uds=str(tmp_path / "nobody.sock"))
    with pytest.raises(UnavailableError, match="node unreachable") as exc:
        await HttpNodeClient.connect("http://node", token="t", transport=transport)
    assert exc.value.retryable is True


async def test_http_client_stopped_node_is_unavailable(
    wired_node: WiredNode, node_client: HttpNodeClient
) -> None:
    assert await node_client.list_running() == []
    wired_node.server.should_exit = True
    deadline = asyncio.get_running_loop().time() + 10
    with pytest.raises(UnavailableError):  # once the server has closed its socket
        while asyncio.get_running_loop().time() < deadline:
            await node_client.list_running()
            await asyncio.sleep(0.02)


async def test_http_client_import_progress_streams_before_the_result(
    wired_node: WiredNode, node_client: HttpNodeClient
) -> None:
    seen: list[tuple[str, int, int]] = []
    first = asyncio.Event()

    def progress(stage: str, done: int, total: int) -> None:
        seen.append((stage, done, total))
        first.set()

    task = asyncio.create_task(
        node_client.import_image(ImageImport(source="docker://x", name="app"), progress=progress)
    )
    # The node holds the import until released: a buffered stream would never show this.
    await asyncio.wait_for(first.wait(), 10)
    assert not task.done()
    wired_node.templates.release.set()
    imported = await asyncio.wait_for(task, 10)
    assert seen == [("copy", 0, 2), ("copy", 2, 2)]
    assert (imported.name, imported.fingerprint, imported.envd_injected) == ("app", "f" * 64, False)


async def test_http_client_import_error_mid_stream_is_the_same_class(
    wired_node: WiredNode, node_client: HttpNodeClient
) -> None:
    wired_node.templates.release.set()
    with pytest.raises(ImageError, match="not an image") as exc:
        await node_client.import_image(ImageImport(source="bad", name="app"))
    assert exc.value.public_message == "not an image"


async def test_http_client_build_logs_stream_and_a_failed_step_is_named(
    wired_node: WiredNode, node_client: HttpNodeClient
) -> None:
    lines: list[tuple[str, str, str | None]] = []
    logged = asyncio.Event()

    def log(level: str, message: str, step: str | None) -> None:
        lines.append((level, message, step))
        logged.set()

    task = asyncio.create_task(
        node_client.run_build(
            "app",
            {"fail": True, "steps": []},
            cpu_count=1,
            memory_mb=256,
            log=log,
            build_id="b1",
        )
    )
    await asyncio.wait_for(logged.wait(), 10)
    assert not task.done()
    wired_node.templates.build_release.set()
    with pytest.raises(BuildFailedError) as failed:
        await asyncio.wait_for(task, 10)
    assert (failed.value.message, failed.value.step) == ("RUN false: exit status 1", "1")
    assert lines == [("info", "step 0 started", "0")]
    await node_client.run_build(
        "app", {"steps": []}, cpu_count=1, memory_mb=256, log=log, build_id="b2"
    )
    assert wired_node.templates.builds == [("app", "b1"), ("app", "b2")]


async def test_http_client_build_files_upload_streams(
    wired_node: WiredNode, node_client: HttpNodeClient
) -> None:
    assert await node_client.has_files("abc123") is False

    async def chunks():  # type: ignore[no-untyped-def]
        for i in range(5):
            yield bytes([i]) * 1000

    await node_client.store_files("abc123", chunks())
    assert await node_client.has_files("abc123") is True
    assert wired_node.templates.files["abc123"] == b"".join(bytes([i]) * 1000 for i in range(5))
    await node_client.delete("app")
    assert wired_node.templates.deleted == ["app"]


async def test_node_volume_routes_refuse_bad_input_and_callers_without_the_token(
    wired_node: WiredNode,
) -> None:
    """``/v1/volumes``: a name that is no volume id, a path with ``..``, bad metadata or a
    bad range is 400 before the backend is asked; no token is 401 (ADR 0034)."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    vid = "vol00000000000000000002"
    async with httpx.AsyncClient(transport=wired_node.transport(), base_url="http://node",
                                 headers=auth) as http:  # fmt: skip
        r = await http.post("/v1/volumes", json={"volume_id": "../etc", "quota_bytes": 1})
        assert r.status_code == 400 and "not a volume id" in r.json()["message"]
        r = await http.post("/v1/volumes", json={"volume_id": vid, "quota_bytes": 0})
        assert r.status_code == 400
        assert not wired_node.volumes.created
        r = await http.get(f"/v1/volumes/{vid}/entry", params={"path": "a/../../x"})
        assert r.status_code == 400 and "'..'" in r.json()["message"]
        r = await http.put(f"/v1/volumes/{vid}/file", params={"path": "x"}, content=b"x",
                           headers={"X-Hutch-Volume-Metadata": "[1]"})  # fmt: skip
        assert r.status_code == 400 and "object of strings" in r.json()["message"]
        r = await http.get(f"/v1/volumes/{vid}/file", params={"path": "x", "start": "-1"})
        assert r.status_code == 400
        r = await http.get(f"/v1/volumes/{vid}/usage")
        assert r.status_code == 404  # never created here
    async with httpx.AsyncClient(transport=wired_node.transport(), base_url="http://node") as h:
        assert (await h.post("/v1/volumes", json={"volume_id": vid, "quota_bytes": 1})
                ).status_code == 401  # fmt: skip
    assert not wired_node.volumes.created
