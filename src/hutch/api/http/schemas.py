"""E2B's wire shapes (SDK 2.63's generated models): the only place camelCase exists.

Request bodies are pydantic models with aliases; only types are checked here (strict: a
string ``"30"`` is not a timeout), ranges and limits are the service's. Responses are
built from domain objects by the ``*_body`` functions, with the fields infra's handlers
send: required fields always present, optional ones omitted rather than ``null`` where
infra's Go type says ``omitempty`` (``from_dict`` of ``network``/``lifecycle`` crashes on
``null``), ``null`` where it does not (``Template.createdBy``/``lastSpawnedAt``). So
``domain`` is left out when there is none (the SDK reads a missing one as none), and
``volumeMounts`` is always a list on listed and detailed sandboxes, ``[]`` when empty, as
infra always sends it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from hutch.api.models import ApiKey, NetworkConfig, Sandbox, Team, Template, Volume, VolumeMount
from hutch.api.service.membership import NodeView
from hutch.api.service.node_status import NodeStatus
from hutch.api.service.ports import SandboxLogLine, SandboxMetrics
from hutch.api.service.sandboxes import public_state
from hutch.shared.ids import CLIENT_ID
from hutch.volumes.base import EntryStat, Usage

#: Fields of ``NewSandbox``/``NewSandboxV2`` hutch does not implement yet, and why: refused
#: (400) rather than silently ignored (an ignored egress rule would surprise).
UNSUPPORTED_CREATE_FIELDS: Final = {
    "iam": "IAM tokens are not supported by this server yet",
}
_NAMESPACE: Final = uuid.UUID("6c1f6a8e-5d2b-4f57-9a0e-8d1d3b0c2a61")


class _Body(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="allow", frozen=True)


class AutoResumeBody(_Body):
    """``SandboxAutoResumeConfig``."""

    enabled: StrictBool


class VolumeMountBody(_Body):
    """``SandboxVolumeMount``: a volume (by name, or by id in hutch) and where to mount it."""

    name: StrictStr
    path: StrictStr


#: Fields of ``SandboxNetworkConfig``/``SandboxNetworkUpdateConfig`` refused when set.
UNSUPPORTED_NETWORK_FIELDS: Final = {
    "egressProxy": "network.egressProxy: a SOCKS5 egress proxy is not supported by this server",
    "rules": "network.rules: transform rules are not supported by this server",
    "httpsPorts": "network.httpsPorts: HTTPS to sandbox ports is not supported by this server",
}


class NetworkBody(_Body):
    """``SandboxNetworkConfig`` (create) and ``SandboxNetworkUpdateConfig`` (PUT)."""

    allow_out: list[StrictStr] | None = Field(default=None, alias="allowOut")
    deny_out: list[StrictStr] | None = Field(default=None, alias="denyOut")
    dns_servers: list[StrictStr] | None = Field(default=None, alias="dnsServers")
    allow_public_traffic: StrictBool | None = Field(default=None, alias="allowPublicTraffic")
    mask_request_host: StrictStr | None = Field(default=None, alias="maskRequestHost")
    #: Only in the update body (the create has it beside ``network``).
    allow_internet_access: StrictBool | None = None

    def unsupported(self) -> list[str]:
        """The unsupported fields the request actually sets."""
        extra = self.model_extra or {}
        return [why for name, why in UNSUPPORTED_NETWORK_FIELDS.items() if extra.get(name)]


class NewSandboxBody(_Body):
    """``NewSandbox`` (v1, has ``secure``) and ``NewSandboxV2`` (no ``secure``)."""

    template_id: StrictStr = Field(alias="templateID")
    timeout: StrictInt | None = None
    metadata: dict[str, StrictStr] | None = None
    env_vars: dict[str, StrictStr] | None = Field(default=None, alias="envVars")
    secure: StrictBool | None = None
    allow_internet_access: StrictBool | None = None
    auto_pause: StrictBool | None = Field(default=None, alias="autoPause")
    auto_pause_memory: StrictBool | None = Field(default=None, alias="autoPauseMemory")
    auto_resume: AutoResumeBody | None = Field(default=None, alias="autoResume")
    volume_mounts: list[VolumeMountBody] | None = Field(default=None, alias="volumeMounts")
    #: ``Mcp``: the MCP servers the SDK's ``mcp-gateway`` command will start (docs/mcp.md).
    #: As in E2B's API only the server names are kept (infra records them with the
    #: sandbox's creation metadata); the gateway itself gets the config from the SDK.
    mcp: dict[StrictStr, Any] | None = None
    network: NetworkBody | None = None
    #: hutch's own: a disk other than the template's (MiB, up to the node's limit).
    disk_size_mb: StrictInt | None = Field(default=None, alias="diskSizeMB", ge=1)

    def unsupported(self) -> list[str]:
        """``"field: why"`` for each unsupported feature the request actually asks for."""
        extra = self.model_extra or {}
        fields = UNSUPPORTED_CREATE_FIELDS.items()
        found = [f"{name}: {why}" for name, why in fields if extra.get(name)]
        return found + (self.network.unsupported() if self.network is not None else [])


class ImportImageBody(_Body):
    """hutch's own ``POST /templates/from-image``: an OCI image to import as a template.

    No ``envdPath``: a host path chosen by an API caller would let it copy host files into
    its sandboxes; the CLI on the host offers it.
    """

    source: StrictStr
    name: StrictStr
    enable_inject_envd: StrictBool = Field(default=False, alias="enableInjectEnvd")
    cpu_count: float | None = Field(default=None, alias="cpuCount", gt=0, le=1024)
    memory_mb: StrictInt | None = Field(default=None, alias="memoryMB", ge=8)
    #: Its sandboxes' disk (MiB, ADR 0023), up to the node's limit; None: the default.
    disk_size_mb: StrictInt | None = Field(default=None, alias="diskSizeMB", ge=1)
    start_cmd: StrictStr | None = Field(default=None, alias="startCmd")
    ready_cmd: StrictStr | None = Field(default=None, alias="readyCmd")


class TimeoutBody(_Body):
    """``SandboxTimeoutRequest``."""

    timeout: StrictInt


class RefreshBody(_Body):
    """``SandboxRefreshRequest``."""

    duration: StrictInt | None = None


class ConnectBody(_Body):
    """``ConnectSandbox`` (v1, ``timeout`` required) and ``ConnectSandboxV2``."""

    timeout: StrictInt | None = None
    memory: StrictBool | None = None


class PauseBody(_Body):
    """``SandboxPauseRequest``: ``memory`` False asks for a filesystem-only pause."""

    memory: StrictBool | None = None
    require_healthy_guest: StrictBool | None = Field(default=None, alias="requireHealthyGuest")


class ResumeBody(_Body):
    """``ResumedSandbox`` (the deprecated ``POST /sandboxes/{id}/resume``)."""

    timeout: StrictInt | None = None
    auto_pause: StrictBool | None = Field(default=None, alias="autoPause")


def iso(ts: datetime) -> str:
    """RFC 3339 in UTC with ``Z``, as infra sends it."""
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def sandbox_body(sandbox: Sandbox, *, domain: str | None) -> dict[str, Any]:
    """``Sandbox``: the create and connect response."""
    body: dict[str, Any] = {
        "templateID": sandbox.template_id,
        "sandboxID": sandbox.id,
        "clientID": CLIENT_ID,
        "envdVersion": sandbox.envd_version,
    }
    if domain is not None:
        body["domain"] = domain
    if sandbox.alias is not None:
        body["alias"] = sandbox.alias
    if sandbox.envd_access_token is not None:
        body["envdAccessToken"] = sandbox.envd_access_token
    if sandbox.traffic_access_token is not None:
        body["trafficAccessToken"] = sandbox.traffic_access_token
    return body


def network_body(network: NetworkConfig) -> dict[str, Any]:
    """``SandboxNetworkConfig``: the policy in force, as given."""
    egress = network.egress
    body: dict[str, Any] = {
        "allowOut": list(egress.allow_out),
        "denyOut": list(egress.deny_out),
        "allowPublicTraffic": network.allow_public_traffic,
    }
    if egress.dns_servers is not None:
        body["dnsServers"] = list(egress.dns_servers)
    if network.mask_request_host is not None:
        body["maskRequestHost"] = network.mask_request_host
    return body


def _mounts(mounts: Sequence[VolumeMount]) -> list[dict[str, str]]:
    return [{"name": m.name, "path": m.path} for m in mounts]


def listed_sandbox_body(sandbox: Sandbox, *, mounts: Sequence[VolumeMount] = ()) -> dict[str, Any]:
    """``ListedSandbox``: one item of a listing."""
    body: dict[str, Any] = {
        "templateID": sandbox.template_id,
        "sandboxID": sandbox.id,
        "clientID": CLIENT_ID,
        "startedAt": iso(sandbox.started_at),
        "endAt": iso(sandbox.end_at),
        "cpuCount": sandbox.cpu_count,
        "memoryMB": sandbox.memory_mb,
        "diskSizeMB": sandbox.disk_mb,
        "state": public_state(sandbox.state) or "running",
        "envdVersion": sandbox.envd_version,
        "metadata": dict(sandbox.metadata),
        "volumeMounts": _mounts(mounts),
    }
    if sandbox.alias is not None:
        body["alias"] = sandbox.alias
    return body


def sandbox_detail_body(
    sandbox: Sandbox, *, domain: str | None, mounts: Sequence[VolumeMount] = ()
) -> dict[str, Any]:
    """``SandboxDetail``: ``GET /sandboxes/{id}`` (``network`` in force; ``pauseMode`` once paused:
    ``full`` when the last pause kept memory, ``filesystem`` when it kept only files)."""
    body = listed_sandbox_body(sandbox, mounts=mounts)
    body["allowInternetAccess"] = sandbox.allow_internet
    if sandbox.network != NetworkConfig():  # infra: omitted when none was given
        body["network"] = network_body(sandbox.network)
    body["lifecycle"] = {
        "autoResume": sandbox.auto_resume,
        "onTimeout": "pause" if sandbox.auto_pause else "kill",
    }
    if sandbox.pause_mode is not None:
        body["pauseMode"] = sandbox.pause_mode
    if domain is not None:
        body["domain"] = domain
    if sandbox.envd_access_token is not None:
        body["envdAccessToken"] = sandbox.envd_access_token
    return body


def metric_body(metric: SandboxMetrics) -> dict[str, Any]:
    """``SandboxMetric``."""
    return {
        "timestamp": iso(metric.timestamp),
        "timestampUnix": int(metric.timestamp.timestamp()),
        "cpuCount": metric.cpu_count,
        "cpuUsedPct": metric.cpu_used_pct,
        "memUsed": metric.mem_used,
        "memTotal": metric.mem_total,
        "memCache": metric.mem_cache,
        "diskUsed": metric.disk_used,
        "diskTotal": metric.disk_total,
    }


def _level(level: str) -> str:
    # SandboxLogEntry.level is LogLevel: debug | info | warn | error.
    return level if level in {"debug", "info", "warn", "error"} else "info"


def logs_v1_body(lines: list[SandboxLogLine]) -> dict[str, Any]:
    """``SandboxLogs``: ``{logs: [{timestamp, line}], logEntries: [...]}``; each ``line`` is
    the entry as the flat JSON object envd wrote (E2B serves envd's raw JSON line there, and
    the ``e2b`` CLI's ``sandbox logs`` parses it)."""
    return {
        "logs": [{"timestamp": iso(x.timestamp), "line": _raw_line(x)} for x in lines],
        "logEntries": [_entry(x) for x in lines],
    }


def _raw_line(line: SandboxLogLine) -> str:
    raw: dict[str, str] = {"level": _level(line.level), **line.fields}
    raw.setdefault("timestamp", iso(line.timestamp))
    raw["message"] = line.message
    return json.dumps(raw, ensure_ascii=False)


def logs_v2_body(lines: list[SandboxLogLine]) -> dict[str, Any]:
    """``SandboxLogsV2Response``: ``{logs: [SandboxLogEntry]}``."""
    return {"logs": [_entry(x) for x in lines]}


def _entry(line: SandboxLogLine) -> dict[str, Any]:
    return {
        "timestamp": iso(line.timestamp),
        "message": line.message,
        "level": _level(line.level),
        "fields": dict(line.fields),
    }


def template_body(template: Template, *, default_envd_version: str) -> dict[str, Any]:
    """``Template``. Build bookkeeping hutch does not keep yet gets neutral values; the
    ``buildID`` is a stable UUID derived from the template's id and last change."""
    names = [template.alias] if template.alias else []
    build = uuid.uuid5(_NAMESPACE, f"{template.id}@{iso(template.updated_at)}")
    return {
        "templateID": template.id,
        "buildID": str(build),
        "cpuCount": template.cpu_count,
        "memoryMB": template.memory_mb,
        "diskSizeMB": template.disk_mb,
        "public": template.public,
        "aliases": names,
        "names": names,
        "createdAt": iso(template.created_at),
        "updatedAt": iso(template.updated_at),
        "createdBy": None,
        "lastSpawnedAt": None,
        "spawnCount": 0,
        "buildCount": 1,
        "envdVersion": template.envd_version or default_envd_version,
        "buildStatus": template.build_state.value,
    }


class TemplateUpdateBody(_Body):
    """``TemplateUpdateRequest``: ``{public?}`` (an empty body changes nothing)."""

    public: StrictBool | None = None


class KeyNameBody(_Body):
    """``NewTeamAPIKey`` / ``UpdateTeamAPIKey``: ``{name}``."""

    name: StrictStr


class NewTeamBody(_Body):
    """hutch's ``POST /admin/teams``: ``{name}``."""

    name: StrictStr


class PublishBody(_Body):
    """hutch's ``PATCH /admin/templates/{templateID}``: ``{public}``."""

    public: StrictBool


class AdminNewKeyBody(_Body):
    """``NewTeamAPIKey`` of ``POST /admin/teams/{teamID}/api-keys``; hutch adds ``admin``."""

    name: StrictStr
    admin: StrictBool = False


def admin_team_body(team: Team, *, is_default: bool, live_sandboxes: int) -> dict[str, Any]:
    """A team as ``GET /admin/teams`` lists it (hutch's shape; no key is issued)."""
    return {
        "teamID": team.id,
        "name": team.name,
        "createdAt": iso(team.created_at),
        "isDefault": is_default,
        "liveSandboxes": live_sandboxes,
    }


def _masking(mask: str) -> dict[str, Any]:
    """``IdentifierMaskingDetails`` from the stored mask ``e2b_ab…wxyz``."""
    prefix, _, rest = mask.partition("_")
    head, _, tail = rest.partition("…")
    return {
        "prefix": f"{prefix}_",
        "valueLength": 40,
        "maskedValuePrefix": head,
        "maskedValueSuffix": tail,
    }


def api_key_body(key: ApiKey, *, secret: str | None = None, admin: bool = False) -> dict[str, Any]:
    """``TeamAPIKey``, or ``CreatedTeamAPIKey`` with ``secret``. ``createdBy`` and
    ``lastUsed`` are omitted as infra omits them when unset (hutch has no users and does
    not track use). ``admin``: as the ``/admin`` routes answer, with hutch's ``teamID`` and
    ``admin`` (the key's role) added."""
    body: dict[str, Any] = {
        "id": key.id,
        "name": key.name,
        "mask": _masking(key.mask),
        "createdAt": iso(key.created_at),
    }
    if admin:
        body["teamID"] = key.team_id
        body["admin"] = key.admin
    if secret is not None:
        body["key"] = secret
    return body


def team_body(team: Team, *, is_default: bool, key: str) -> dict[str, Any]:
    """``Team``: every field required, ``apiKey`` the new CLI key."""
    return {"teamID": team.id, "name": team.name, "apiKey": key, "isDefault": is_default}


def build_body(build: Any) -> dict[str, Any]:
    """``TemplateBuild`` of an SDK build (kept in the store) (``service/template_builds.Build``)."""
    body: dict[str, Any] = {
        "buildID": build.build_id,
        "status": build.status,
        "createdAt": iso(build.created_at),
        "updatedAt": iso(build.updated_at),
        "cpuCount": build.cpu_count,
        "memoryMB": build.memory_mb,
    }
    if build.finished_at is not None:
        body["finishedAt"] = iso(build.finished_at)
    return body


def current_build_body(template: Template, body: dict[str, Any]) -> dict[str, Any]:
    """``TemplateBuild`` of a template's current version (``body``: its ``Template``)."""
    out: dict[str, Any] = {
        "buildID": body["buildID"],
        "status": template.build_state.value,
        "createdAt": body["updatedAt"],
        "updatedAt": body["updatedAt"],
        "cpuCount": template.cpu_count,
        "memoryMB": template.memory_mb,
        "diskSizeMB": template.disk_mb,
        "envdVersion": body["envdVersion"],
    }
    if template.build_state.value in ("ready", "error"):
        out["finishedAt"] = body["updatedAt"]
    return out


class NewVolumeBody(_Body):
    """``NewVolume`` ``{name}``, plus hutch's optional ``sizeMB`` quota."""

    name: StrictStr
    size_mb: StrictInt | None = Field(default=None, alias="sizeMB")


class EntryAttrsBody(_Body):
    """The body of ``PATCH /volumecontent/{id}/path``."""

    uid: StrictInt | None = Field(default=None, ge=0, le=0xFFFFFFFF)
    gid: StrictInt | None = Field(default=None, ge=0, le=0xFFFFFFFF)
    mode: StrictInt | None = Field(default=None, ge=0, le=0xFFFFFFFF)


def volume_body(
    volume: Volume, *, token: str | None = None, usage: Usage | None = None
) -> dict[str, Any]:
    """``Volume`` (no token) or ``VolumeAndToken``, plus hutch's ``sizeMB`` and, when
    measured, ``usedBytes``/``totalBytes`` (what the filesystem reports)."""
    body: dict[str, Any] = {
        "volumeID": volume.id,
        "name": volume.name,
        "sizeMB": volume.quota_bytes // (1 << 20),
    }
    if token is not None:
        body["token"] = token
    if usage is not None:
        body["usedBytes"] = usage.used_bytes
        body["totalBytes"] = usage.total_bytes
    return body


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def entry_body(entry: EntryStat) -> dict[str, Any]:
    """``VolumeEntryStat``; ``target`` only for symlinks, ``metadata`` only when set."""
    body: dict[str, Any] = {
        "name": entry.name,
        "type": entry.type,
        "path": entry.path,
        "size": entry.size,
        "mode": entry.mode,
        "uid": entry.uid,
        "gid": entry.gid,
        "atime": _iso(entry.atime),
        "mtime": _iso(entry.mtime),
        "ctime": _iso(entry.ctime),
    }
    if entry.target is not None:
        body["target"] = entry.target
    if entry.metadata:
        body["metadata"] = dict(entry.metadata)
    return body


def node_status_body(status: NodeStatus) -> dict[str, Any]:
    """``GET /hutch/status`` (hutch's own; docs/serve.md)."""
    return {
        "nodeID": status.node_id,
        "runtime": status.runtime,
        "capacity": {
            "maxSandboxes": status.max_sandboxes,
            "cpuCount": status.host_cpu_count,
            "memoryMB": status.host_memory_mb,
            "allocatedCPU": status.allocated_cpu,
            "allocatedMemoryMB": status.allocated_memory_mb,
        },
        "sandboxes": {"running": status.running, "paused": status.paused},
        "pool": [
            {"templateID": p.template, "target": p.target, "ready": p.ready} for p in status.pool
        ],
    }


# ---- cluster nodes (``GET /nodes``, E2B's ``Node``/``NodeDetail``; ADR 0025) ---------------

#: E2B's nodes belong to a cluster; hutch has one.
CLUSTER_ID: Final = "00000000-0000-0000-0000-000000000000"


class NodeStatusChangeBody(_Body):
    """E2B's ``NodeStatusChange``: ``{status, clusterID?}``."""

    status: StrictStr
    clusterID: StrictStr | None = None


def node_body(view: NodeView) -> dict[str, Any]:
    """E2B's ``Node`` (and ``NodeDetail``, the same fields bar ``sandboxStartingCount``),
    plus hutch's own: ``address``, ``labels``, ``bootID``, ``heartbeatAt``,
    ``leaseExpiresAt``, ``lostReason``, ``capacity``, ``allocatedDiskMB``. ``status`` is
    ``ready``, ``draining`` or ``lost`` (hutch's; E2B's nearest to lost is unhealthy)."""
    node, load = view.node, view.load
    mib = 1 << 20
    return {
        "id": node.id,
        "serviceInstanceID": node.boot_id,
        "clusterID": CLUSTER_ID,
        "version": node.version,
        "commit": "",
        "machineInfo": {
            "cpuFamily": "",
            "cpuModel": "",
            "cpuModelName": "",
            "cpuArchitecture": "",
        },
        "status": node.status.value,
        "statusChangedAt": iso(node.status_changed_at),
        "sandboxCount": load.sandboxes,
        "sandboxStartingCount": load.starting,
        "createSuccesses": node.create_successes,
        "createFails": node.create_fails,
        "metrics": {
            "allocatedCPU": load.allocated_cpu,
            "allocatedMemoryBytes": load.allocated_memory_mb * mib,
            "cpuPercent": round(node.usage.cpu_pct),
            "memoryUsedBytes": node.usage.memory_used_mb * mib,
            "cpuCount": node.capacity.cpu_count,
            "memoryTotalBytes": node.capacity.memory_mb * mib,
            "disks": [
                {
                    "mountPoint": "/",
                    "device": "",
                    "filesystemType": "",
                    "usedBytes": node.usage.disk_used_mb * mib,
                    "totalBytes": node.capacity.disk_mb * mib,
                }
            ],
            "hugePagesTotal": 0,
            "hugePagesUsed": 0,
            "hugePagesReserved": 0,
            "hugePageSizeBytes": 0,
        },
        "address": node.address,
        "labels": dict(node.labels),
        "bootID": node.boot_id,
        "apiVersion": node.api_version,
        "registeredAt": iso(node.registered_at),
        "heartbeatAt": iso(node.heartbeat_at),
        "leaseExpiresAt": iso(node.lease_expires_at),
        "lostReason": node.lost_reason,
        "capacity": {
            "cpuCount": node.capacity.cpu_count,
            "memoryMB": node.capacity.memory_mb,
            "diskMB": node.capacity.disk_mb,
            "maxSandboxes": node.capacity.max_sandboxes,
        },
        "allocatedDiskMB": load.allocated_disk_mb,
    }
