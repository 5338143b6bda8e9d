"""The node API's wire: every body the api and a node exchange, in one module (docs/node-api.md).

Both ends import this and nothing of each other: the node's transport
(``hutch.node.http``) answers with these models, the api's adapter
(``hutch.api.nodes.http_client``) sends and parses them. Field names are snake_case (the
node API is hutch's own; E2B's camelCase stays in ``api/http/schemas.py``). Times are
epoch seconds. Unknown fields are refused, so a version skew shows as a clear 400 instead
of a silently dropped option.

Streams (template imports, builds) are NDJSON: one :class:`StreamEvent` per line, the last
one ``result``/``done``/``failed`` or ``error``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

#: The path prefix and the version a node answers in ``GET /v1/node``. A later,
#: incompatible wire gets ``/v2`` beside it; membership refuses nodes that lack the
#: api's version.
API_VERSION = "v1"
PREFIX = f"/{API_VERSION}"
NDJSON = "application/x-ndjson"


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WireError(_Wire):
    """An error of the shared tree (``hutch.shared.errors``) as it crosses the wire.

    ``error`` is the class name of the nearest class of the shared tree (a node's own
    subclass, e.g. its ``TemplateNotFoundError``, crosses as ``NotFoundError``); ``code``
    is its Connect code, the fallback when the class is unknown to the receiver.
    """

    error: str
    code: str
    message: str
    public_message: str
    retryable: bool = False
    #: E2B's machine-readable ``error_code`` when the error carries one.
    error_code: str | None = None


class NodeInfo(_Wire):
    """``GET /v1/node``: who the node is (membership will register exactly this)."""

    node_id: str
    version: str
    api_version: str = API_VERSION
    runtime: str
    max_sandboxes: int
    sandboxes: int


class PoolFill(_Wire):
    """One template's warm pool: members wanted, members booted and idle."""

    template: str
    target: int
    ready: int


class NodeStatus(_Wire):
    """``GET /v1/status``: the node's load and limits (``hutch status``, placement later)."""

    node_id: str
    runtime: str
    max_sandboxes: int
    running: int
    paused: int
    host_cpu_count: int
    host_memory_mb: int
    allocated_cpu: float
    allocated_memory_mb: int
    pool: list[PoolFill] = Field(default_factory=list)


class VolumeMount(_Wire):
    """A volume the node mounts read-write at ``path`` (``backend`` names its backend)."""

    volume_id: str
    backend: str
    path: str


class CreateVolume(_Wire):
    """``POST /v1/volumes``: make an empty local volume (its ext4 image) on this node."""

    volume_id: str
    quota_bytes: int = Field(gt=0)


class VolumeCapacity(_Wire):
    """``GET /v1/volumes``: the largest quota a new volume may have on this node now."""

    capacity_bytes: int


class VolumeUsage(_Wire):
    """``GET /v1/volumes/{id}/usage``: what the volume's files use and what it may hold."""

    used_bytes: int
    total_bytes: int


class VolumeEntry(_Wire):
    """One file, directory or symlink of a volume (``volumes.base.EntryStat``); times are
    Unix seconds."""

    name: str
    type: str
    path: str
    size: int
    mode: int
    uid: int
    gid: int
    atime: float
    mtime: float
    ctime: float
    target: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)


class VolumeEntries(_Wire):
    """``GET /v1/volumes/{id}/dir``."""

    entries: list[VolumeEntry]


class MoveVolumeEntry(_Wire):
    """``POST /v1/volumes/{id}/move``."""

    src: str
    dst: str


#: ``PUT /v1/volumes/{id}/file``: the new file's ``user.e2b.*`` metadata, as a JSON object.
VOLUME_METADATA_HEADER = "X-Hutch-Volume-Metadata"
#: ``GET /v1/volumes/{id}/file``: the whole file's size (the body may be a range of it).
VOLUME_FILE_SIZE_HEADER = "X-Hutch-File-Size"


class Egress(_Wire):
    """A sandbox's egress policy (``shared/egress.py``): ``PUT /v1/sandboxes/{id}/network``
    and part of a create. The node validates it again."""

    allow_out: list[str] = Field(default_factory=list)
    deny_out: list[str] = Field(default_factory=list)
    #: None: the node's own resolvers.
    dns_servers: list[str] | None = None


class CreateSandbox(_Wire):
    """``POST /v1/sandboxes``."""

    sandbox_id: str
    template: str
    cpu_count: float | None = None
    memory_mb: int | None = None
    #: The hard limit of its writable layer (MiB, ADR 0023); None: the template's, else
    #: the node's default. Above the node's limit: 400 naming it.
    disk_mb: int | None = Field(default=None, ge=1)
    env_vars: dict[str, str] = Field(default_factory=dict)
    access_token: str | None = None
    allow_internet: bool = True
    #: None: everything, or nothing when ``allow_internet`` is false.
    egress: Egress | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    volume_mounts: list[VolumeMount] = Field(default_factory=list)
    #: Node API addresses of peers that hold the template's artifact (ADR 0029): a node
    #: that lacks it fetches it from the first that serves it, then creates; empty and
    #: lacking it, the node refuses with ``ArtifactUnavailableError``.
    artifact_sources: list[str] = Field(default_factory=list)


class ArtifactPart(_Wire):
    """One directory of an artifact, streamed as its own tar: ``artifact`` (a sealed
    image tree, ``.artifacts/<id>``), ``layer`` (a snapshot's layer, ``.snapshots/<id>``)
    or ``tree`` (a template with its own rootfs, ``<id>/``)."""

    kind: Literal["artifact", "layer", "tree"]
    id: str


class ArtifactManifest(_Wire):
    """``GET /v1/artifacts/{name}``: what a peer must fetch to hold template ``name``.

    ``template`` is the source's ``template.json`` (its paths are the source's: the
    receiver rewrites ``layers`` to its own ``.snapshots/<id>/layer`` in ``layers`` order,
    top-most first); ``base`` names the template whose own tree a snapshot sits on (the
    receiver uses its own, fetched first when it lacks it)."""

    name: str
    template: dict[str, Any] = Field(default_factory=dict)
    parts: list[ArtifactPart] = Field(default_factory=list)
    layers: list[str] = Field(default_factory=list)
    base: str | None = None


class FetchArtifact(_Wire):
    """``POST /v1/artifacts/{name}/fetch``: hold ``name``, fetched from the first of
    ``sources`` (peer node API addresses) that serves it."""

    sources: list[str]


class FetchedArtifact(_Wire):
    """What a fetch did: ``fetched`` false when the node held it already."""

    name: str
    fetched: bool
    source: str | None = None
    bytes: int = 0
    seconds: float = 0.0


class Sandbox(_Wire):
    """A sandbox the node runs (or holds paused)."""

    sandbox_id: str
    template: str
    address: str
    started_at: float
    metadata: dict[str, str] = Field(default_factory=dict)
    #: None while it runs; ``full`` or ``filesystem`` when paused (ADR 0004).
    paused: str | None = None


class SandboxList(_Wire):
    """``GET /v1/sandboxes``."""

    sandboxes: list[Sandbox]


class PauseSandbox(_Wire):
    """``POST /v1/sandboxes/{id}/pause``."""

    keep_memory: bool = True


class Paused(_Wire):
    """The answer to a pause."""

    memory_kept: bool


class ResumeSandbox(_Wire):
    """``POST /v1/sandboxes/{id}/resume``: what a reboot needs (env vars, token, volumes)."""

    keep_memory: bool = True
    env_vars: dict[str, str] = Field(default_factory=dict)
    access_token: str | None = None
    volume_mounts: list[VolumeMount] = Field(default_factory=list)


class Resumed(_Wire):
    """The answer to a resume."""

    sandbox: Sandbox
    memory_kept: bool


class SnapshotSandbox(_Wire):
    """``POST /v1/sandboxes/{id}/snapshot``."""

    snapshot_id: str


class Metadata(_Wire):
    """``PUT /v1/sandboxes/{id}/metadata``: the whole map (ADR 0005)."""

    metadata: dict[str, str]


class MetricsSample(_Wire):
    """One resource sample."""

    timestamp: float
    cpu_count: int
    cpu_used_pct: float
    mem_used: int
    mem_total: int
    mem_cache: int
    disk_used: int
    disk_total: int


class MetricsList(_Wire):
    """``GET /v1/sandboxes/{id}/metrics?start=&end=`` (epoch seconds, both optional)."""

    samples: list[MetricsSample]


class LogLine(_Wire):
    """One line of a sandbox's log."""

    timestamp: float
    message: str
    level: str = "info"
    fields: dict[str, str] = Field(default_factory=dict)


class LogList(_Wire):
    """``GET /v1/sandboxes/{id}/logs``: a running sandbox's log, or a killed one's tail."""

    lines: list[LogLine]


class Reconcile(_Wire):
    """``POST /v1/reconcile``: the ids the caller's store knows on this node."""

    known: list[str] = Field(default_factory=list)
    paused: list[str] = Field(default_factory=list)


class Reconciled(_Wire):
    """What the node destroyed, found missing, and adopted (with each one's state)."""

    removed: list[str]
    missing: list[str]
    adopted: list[Sandbox]


class ImportImage(_Wire):
    """``POST /v1/templates/import`` (answered as an NDJSON stream)."""

    source: str
    name: str
    inject_envd: bool = False
    envd_path: str | None = None
    cpu_count: float = 1.0
    memory_mb: int = 512
    #: Its sandboxes' disk (MiB, ADR 0023); None: the node's default. Above the node's
    #: limit: 400.
    disk_mb: int | None = Field(default=None, ge=1)
    start_cmd: str | None = None
    ready_cmd: str | None = None


class BuildFiles(_Wire):
    """``GET /v1/build-files/{hash}``: whether that archive was uploaded already
    (``PUT`` of the same path uploads it, the body streamed)."""

    present: bool


class RunBuild(_Wire):
    """``POST /v1/builds`` (answered as an NDJSON stream of log lines)."""

    name: str
    build_id: str
    #: E2B's ``TemplateBuildStartV2`` as the api resolved it (``fromTemplate`` pinned).
    start: dict[str, Any]
    cpu_count: float
    memory_mb: int


class ProgressEvent(_Wire):
    """An import's progress: ``done`` of ``total`` in ``stage``."""

    type: Literal["progress"] = "progress"
    stage: str
    done: int
    total: int


class ImportedEvent(_Wire):
    """The import's outcome (the stream's last line)."""

    type: Literal["result"] = "result"
    name: str
    fingerprint: str
    cache_hit: bool
    envd_sha256: str | None = None


class BuildLogEvent(_Wire):
    """One line of a build's log."""

    type: Literal["log"] = "log"
    level: str
    message: str
    step: str | None = None


class BuildDoneEvent(_Wire):
    """The build published its template (the stream's last line)."""

    type: Literal["done"] = "done"


class BuildFailedEvent(_Wire):
    """A step of the build failed (the stream's last line); ``step`` names it."""

    type: Literal["failed"] = "failed"
    message: str
    step: str | None = None


class ErrorEvent(_Wire):
    """The streamed operation failed after the answer began (the stream's last line)."""

    type: Literal["error"] = "error"
    error: WireError


StreamEvent = (
    ProgressEvent | ImportedEvent | BuildLogEvent | BuildDoneEvent | BuildFailedEvent | ErrorEvent
)


class _EventLine(_Wire):
    event: StreamEvent = Field(discriminator="type")


def event_line(event: StreamEvent) -> bytes:
    """One NDJSON line of ``event``."""
    return event.model_dump_json().encode() + b"\n"


def parse_event(line: str | bytes) -> StreamEvent:
    """The event of one NDJSON line (``pydantic.ValidationError`` if it is none)."""
    import json

    return _EventLine.model_validate({"event": json.loads(line)}).event
