"""Every API object hutch answers, field for field: the keys infra's handlers send (its Go
types' ``omitempty``: absent when unset, never ``null``; ``null`` only where the type has
no ``omitempty``), and each body parsed by the official SDK's generated model, whose
``from_dict`` fails on a missing required field (issue 18 gap 13)."""

from __future__ import annotations

from typing import Any

import httpx
from e2b.api.client.models import (
    Error,
    ListedSandbox,
    SandboxDetail,
    SandboxLogs,
    SandboxLogsV2Response,
    SandboxMetric,
    SnapshotInfo,
    Template,
    TemplateAliasResponse,
)
from e2b.api.client.models import Sandbox as SandboxModel

from tests.integration.api.conftest import ApiServer

LISTED = {
    "templateID", "sandboxID", "clientID", "startedAt", "endAt", "cpuCount", "memoryMB",
    "diskSizeMB", "state", "envdVersion", "metadata", "volumeMounts", "alias",
}  # fmt: skip
DETAIL = LISTED | {"allowInternetAccess", "lifecycle", "envdAccessToken"}
METRIC = {
    "timestamp", "timestampUnix", "cpuCount", "cpuUsedPct", "memUsed", "memTotal",
    "memCache", "diskUsed", "diskTotal",
}  # fmt: skip
TEMPLATE = {
    "templateID", "buildID", "cpuCount", "memoryMB", "diskSizeMB", "public", "aliases",
    "names", "createdAt", "updatedAt", "createdBy", "lastSpawnedAt", "spawnCount",
    "buildCount", "envdVersion", "buildStatus",
}  # fmt: skip


def _client(api: ApiServer) -> httpx.Client:
    return httpx.Client(base_url=api.url, headers={"X-API-Key": api.key}, timeout=30)


def _ok(r: httpx.Response, status: int = 200) -> Any:
    assert r.status_code == status, r.text
    return r.json()


def test_sandbox_objects_have_exactly_infras_fields(api: ApiServer) -> None:
    with _client(api) as c:
        created = _ok(c.post("/v2/sandboxes", json={"templateID": "busybox"}), 201)
        # No domain configured: omitted (omitempty), not null.
        assert set(created) == {"templateID", "sandboxID", "clientID", "envdVersion",
                                "envdAccessToken", "alias"}  # fmt: skip
        SandboxModel.from_dict(created)
        sid = created["sandboxID"]
        detail = _ok(c.get(f"/sandboxes/{sid}"))
        assert set(detail) == DETAIL, set(detail) ^ DETAIL
        assert detail["volumeMounts"] == [] and detail["metadata"] == {}
        assert detail["lifecycle"] == {"autoResume": False, "onTimeout": "kill"}
        SandboxDetail.from_dict(detail)
        [listed] = _ok(c.get("/v2/sandboxes"))
        assert set(listed) == LISTED, set(listed) ^ LISTED
        ListedSandbox.from_dict(listed)
        assert set(_ok(c.get("/sandboxes"))[0]) == LISTED
        for metric in _ok(c.get(f"/sandboxes/{sid}/metrics")):
            assert set(metric) == METRIC
            SandboxMetric.from_dict(metric)
        logs = _ok(c.get(f"/sandboxes/{sid}/logs"))
        assert set(logs) == {"logs", "logEntries"}
        SandboxLogs.from_dict(logs)
        SandboxLogsV2Response.from_dict(_ok(c.get(f"/v2/sandboxes/{sid}/logs")))
        snap = _ok(c.post(f"/sandboxes/{sid}/snapshots", json={}), 201)
        assert set(snap) == {"snapshotID", "names"}
        SnapshotInfo.from_dict(snap)
        # Paused: pauseMode appears (hutch's, from the SDK's model), nothing becomes null.
        assert c.post(f"/sandboxes/{sid}/pause").status_code == 204
        paused = _ok(c.get(f"/sandboxes/{sid}"))
        assert set(paused) == DETAIL | {"pauseMode"}
        assert all(v is not None for v in paused.values())
        SandboxDetail.from_dict(paused)


def test_template_and_error_objects_have_exactly_infras_fields(api: ApiServer) -> None:
    with _client(api) as c:
        for body in (*_ok(c.get("/templates")), *_ok(c.get("/v2/templates"))):
            assert set(body) == TEMPLATE, set(body) ^ TEMPLATE
            assert body["createdBy"] is None and body["lastSpawnedAt"] is None  # no omitempty
            Template.from_dict(body)
        alias = _ok(c.get("/templates/aliases/busybox"))
        assert set(alias) == {"templateID", "public"}
        TemplateAliasResponse.from_dict(alias)
        for r in (c.get("/sandboxes/inosuch"), c.post("/v2/sandboxes", json={"templateID": 1})):
            assert set(r.json()) == {"code", "message"}
            Error.from_dict(r.json())
