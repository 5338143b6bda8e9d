"""Sandbox lifecycle as the control plane runs it: create, get, list, timeouts, kill.

Ordering rule (ARCHITECTURE.md, "Data that must never be lost"): every change is recorded
in the store *before* the node acts, and undone if the node fails, so that store and node
never disagree for long:

* create: row ``creating`` → ``node.create`` → row ``running``; on any failure (including
  cancellation) ``node.kill`` and the row is deleted, which also frees its idempotency key
  so that a retry starts afresh. If even that rollback fails, the outcome is unknown and
  :class:`CreateOutcomeUnknownError` (not retryable) says so;
* kill: row ``running|paused|creating`` → ``killing`` → ``node.kill`` → ``killed``.

Another team's sandbox is simply not found (the store scopes every call by team).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import secrets
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Final, Protocol

from hutch.api import metrics
from hutch.api.models import (
    TERMINAL_STATES,
    NetworkConfig,
    NewSandbox,
    Sandbox,
    SandboxPage,
    SandboxState,
    SandboxStateConflictError,
    Snapshot,
    SortOrder,
    TemplateBuildState,
    VolumeMount,
)
from hutch.api.service.artifacts import ArtifactService
from hutch.api.service.create_watch import LeaseWatch, NodeUnresponsiveError
from hutch.api.service.locks import SandboxLockFamily, SandboxLocks
from hutch.api.service.logs import LogsQuery, select_log_lines
from hutch.api.service.placement import (
    Demand,
    NoNodeFits,
    Placement,
    PlacementPolicy,
    ResumeFit,
    pinned_node,
)
from hutch.api.service.ports import (
    NodeClient,
    SandboxLogLine,
    SandboxMetrics,
    SandboxSpec,
    VolumeMountSpec,
)
from hutch.api.service.quotas import QuotaService
from hutch.api.service.template_tags import TemplateTagService
from hutch.api.service.validation import (
    check_auto_pause_memory,
    check_env_vars,
    check_idempotency_key,
    check_metadata,
    check_timeout,
)
from hutch.api.store.base import Clock, SandboxStore, TemplateStore, utc_now
from hutch.api.store.volumes import VolumeNodeTaken
from hutch.shared import logging as hlog
from hutch.shared.egress import parse_policy
from hutch.shared.errors import (
    ArtifactUnavailableError,
    ConflictError,
    ErrorCode,
    HutchError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    UnavailableError,
)
from hutch.shared.ids import NodeID, SandboxID, TeamID, TemplateID, template_version_name
from hutch.shared.paths import ENVD_VERSION

#: Codes of a node's own failures to create (not the request's fault): infra answers them
#: with ``error_code`` ``sandbox_create_failed``.
_log = logging.getLogger(__name__)

_NODE_FAILURES: Final = frozenset(
    {ErrorCode.INTERNAL, ErrorCode.UNKNOWN, ErrorCode.UNAVAILABLE, ErrorCode.DEADLINE_EXCEEDED}
)
#: Where a sandbox may be killed from (paused sandboxes hold a snapshot on the node).
_KILLABLE: Final = frozenset({SandboxState.CREATING, SandboxState.RUNNING, SandboxState.PAUSED})
#: States a client sees as ``running`` / ``paused`` (the E2B API knows only those two).
RUNNING_VIEW: Final = frozenset(
    {SandboxState.CREATING, SandboxState.RUNNING, SandboxState.RESUMING}
)
PAUSED_VIEW: Final = frozenset({SandboxState.PAUSING, SandboxState.PAUSED})
#: How long a replayed create waits for the original request still in flight.
_REPLAY_WAIT_S: Final = 60.0
_REPLAY_POLL_S: Final = 0.05


class CreateOutcomeUnknownError(HutchError):
    """A create failed and its rollback failed too: a sandbox may exist, do not retry."""

    retryable = False


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxPolicy:
    """The service's knobs (from ``ApiSettings``)."""

    default_timeout_v2_s: int = 300
    default_timeout_v1_s: int = 15
    #: The envd version reported when a template does not record one (e2b-compat §1.6).
    envd_version: str = ENVD_VERSION
    #: Sandboxes in node-busy states allowed on the node; more is 429. ``None``: no limit.
    max_sandboxes_per_node: int | None = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateSandboxRequest:
    """A validated-by-type create request (v1 ``NewSandbox`` or v2 ``NewSandboxV2``)."""

    template: str
    #: ``None``: the version's default.
    timeout_s: int | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    env_vars: Mapping[str, str] = field(default_factory=dict, repr=False)
    #: v2 sandboxes are always secured; v1 only when asked.
    secure: bool = True
    allow_internet: bool = True
    auto_pause: bool = False
    #: ``autoPauseMemory``; ``None``: true. False: the timeout's auto-pause keeps only the
    #: filesystem (ADR 0004), and the resume reboots over the kept files.
    auto_pause_memory: bool | None = None
    #: ``None``: on exactly when ``auto_pause`` keeps memory (traffic resumes an
    #: auto-paused sandbox; a filesystem-only one must be resumed by ``connect``, as E2B).
    auto_resume: bool | None = None
    #: ``(volume name or id, mount path)`` pairs (``volumeMounts``).
    volume_mounts: tuple[tuple[str, str], ...] = ()
    #: The names of the MCP servers asked for (``mcp``'s keys), kept as E2B's API keeps
    #: them; the SDK starts the gateway itself after the create (docs/mcp.md).
    mcp_servers: tuple[str, ...] = ()
    #: ``network`` as sent (validated by :func:`network_config`); ``None``: not sent.
    allow_out: tuple[str, ...] | None = None
    deny_out: tuple[str, ...] | None = None
    dns_servers: tuple[str, ...] | None = None
    allow_public_traffic: bool | None = None
    mask_request_host: str | None = None
    #: ``network`` was in the body (also as ``{}``: the default policy, stated).
    network_sent: bool = False
    #: hutch's ``diskSizeMB``: a disk other than the template's (the node refuses one
    #: above its limit with 400). ``None``: the template's.
    disk_mb: int | None = None
    #: 1 for ``POST /sandboxes``, 2 for ``POST /v2/sandboxes`` (default timeout differs).
    api_version: int = 2

    def fingerprint(self) -> str:
        """A hash of the request, to tell a retry from a different body under one key."""
        raw = json.dumps(asdict(self), sort_keys=True, default=dict, separators=(",", ":"))
        return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class ListSandboxesQuery:
    """Filters of a listing; ``states`` ``None`` means running and paused."""

    states: Collection[str] | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    started_after: datetime | None = None
    template: str | None = None
    order: SortOrder = SortOrder.DESC
    limit: int = 100
    next_token: str | None = None


def _no_capacity(message: str) -> UnavailableError:
    """The node is full: infra's 503 ``sandbox_capacity_unavailable`` (the SDK raises
    ``ServiceBusyException`` and retries), its load-bearing "Failed to place sandbox"."""
    return UnavailableError(
        message,
        public_message="Failed to place sandbox: not enough capacity for the requested "
        "resources right now, please retry shortly",
        error_code="sandbox_capacity_unavailable",
    )


def _wanted_states(query: ListSandboxesQuery) -> set[str]:
    wanted = set(query.states) if query.states else {"running", "paused"}
    unknown = wanted - {"running", "paused"}
    if unknown:
        raise InvalidArgumentError(f"state: unknown value(s) {sorted(unknown)}")
    return wanted


def public_state(state: SandboxState) -> str | None:
    """``"running"``, ``"paused"``, or ``None`` for a sandbox that is gone."""
    if state in RUNNING_VIEW:
        return "running"
    if state in PAUSED_VIEW:
        return "paused"
    return None


def network_config(request: CreateSandboxRequest) -> NetworkConfig:
    """The create's ``network`` and ``allow_internet_access``, validated (400 naming the
    bad entry, E2B's rules: ``shared/egress.py``)."""
    egress = parse_policy(
        request.allow_out,
        request.deny_out,
        dns_servers=request.dns_servers,
        allow_internet=request.allow_internet,
    )
    mask = request.mask_request_host
    if mask is not None:
        check_mask_request_host(mask)
    return NetworkConfig(
        egress=egress,
        allow_public_traffic=request.allow_public_traffic is not False,
        mask_request_host=mask,
    )


def sends_network(request: CreateSandboxRequest) -> bool:
    """Whether the create states a policy of its own: a ``network`` field, or
    ``allow_internet_access: false``. (``true`` states nothing: the SDKs always send it.)
    A create from a snapshot that states none gets the snapshot's policy."""
    given = (
        request.allow_out, request.deny_out, request.dns_servers,
        request.allow_public_traffic, request.mask_request_host,
    )  # fmt: skip
    return request.network_sent or not request.allow_internet or any(v is not None for v in given)


def check_mask_request_host(mask: str) -> str:
    """``maskRequestHost``: an ASCII host, optionally with a port or ``${PORT}``."""
    host = mask.replace("${PORT}", "1")
    if not host or len(host) > 255 or not host.isascii() or any(c in host for c in " /?#@\\"):
        raise InvalidArgumentError(
            f"mask request host is not valid: {mask}",
        )
    return mask


def spec_of(sandbox: Sandbox) -> SandboxSpec:
    """What the node needs to start (or boot again) ``sandbox``."""
    template_id = sandbox.template_id
    if sandbox.template_build_id:  # a tag's build: the node's "name@build" (kept by builds)
        template_id = TemplateID(template_version_name(template_id, sandbox.template_build_id))
    return SandboxSpec(
        sandbox_id=sandbox.id,
        team_id=sandbox.team_id,
        template_id=template_id,
        cpu_count=sandbox.cpu_count,
        memory_mb=sandbox.memory_mb,
        disk_mb=sandbox.disk_mb,
        env_vars=sandbox.env_vars,
        envd_access_token=sandbox.envd_access_token,
        allow_internet=sandbox.allow_internet,
        egress=None if sandbox.network.egress.is_default else sandbox.network.egress,
        metadata=sandbox.metadata,
        auto_resume=sandbox.auto_resume,
        traffic_access_token=sandbox.traffic_access_token,
        mask_request_host=sandbox.network.mask_request_host,
        node_id=sandbox.node_id,
    )


def _not_found(sandbox_id: str) -> NotFoundError:
    return NotFoundError(
        f"sandbox {sandbox_id} not found", public_message=f"Sandbox {sandbox_id} not found"
    )


class VolumeMounts(Protocol):
    """What sandbox creation needs of volumes (``service/volumes.VolumeService``)."""

    async def resolve_mounts(
        self, *, team_id: TeamID, requested: Sequence[tuple[str, str]]
    ) -> list[VolumeMount]: ...
    async def record_mounts(
        self, sandbox_id: SandboxID, mounts: Sequence[VolumeMount], *, node_id: str | None = None
    ) -> None: ...
    def mount_specs(self, mounts: Sequence[VolumeMount]) -> list[VolumeMountSpec]: ...
    async def mounts_of(self, sandbox_id: SandboxID) -> list[VolumeMountSpec]: ...


class SnapshotLookup(Protocol):
    """Where a create from a snapshot finds the policy it carries (``SqlSnapshotStore``)."""

    async def find_snapshot(
        self, snapshot_id: TemplateID, *, team_id: TeamID
    ) -> Snapshot | None: ...


class NodeStats(Protocol):
    """Where create outcomes are counted per node (``SqlNodeStore``)."""

    async def count_create(self, node_id: NodeID, *, ok: bool) -> None: ...


class SandboxService:
    """The sandbox verbs; one instance per app, safe for concurrent use."""

    def __init__(
        self,
        *,
        sandboxes: SandboxStore,
        templates: TemplateStore,
        node: NodeClient,
        policy: SandboxPolicy,
        clock: Clock = utc_now,
        locks: SandboxLockFamily | None = None,
        volumes: VolumeMounts | None = None,
        quotas: QuotaService | None = None,
        placement: PlacementPolicy | None = None,
        node_stats: NodeStats | None = None,
        artifacts: ArtifactService | None = None,
        snapshots: SnapshotLookup | None = None,
        lease_watch: LeaseWatch | None = None,
    ) -> None:
        #: Set: a create's node call ends when its node's lease does (ADR 0033).
        self._lease_watch = lease_watch
        #: Where templates live across nodes (ADR 0029): a create on a node that lacks
        #: its template names the holders to fetch from, and a fetch is recorded.
        self._artifacts = artifacts
        #: Set: a create from a snapshot without a policy of its own gets the snapshot's.
        self._snapshots = snapshots
        #: None: one node (``node.node_id``), its count checked against the policy; set:
        #: every create is placed among the registered nodes (``service/placement.py``).
        self._placement = placement
        self._node_stats = node_stats
        self._volumes = volumes
        self._quotas = quotas
        self._locks = locks if locks is not None else SandboxLocks()
        self._sandboxes = sandboxes
        self._templates = templates
        self._node = node
        self._policy = policy
        self._clock = clock
        #: Called when a deadline was set to now or earlier (``set_timeout(0)``): the
        #: reaper's :meth:`~hutch.api.service.reaper.Reaper.nudge`, so the timeout's
        #: kill or auto-pause happens at once rather than at its next tick.
        self.on_deadline_passed: Callable[[], None] | None = None

    # -- create ---------------------------------------------------------------------------

    @metrics.observed("create")
    async def create_sandbox(
        self,
        *,
        team_id: TeamID,
        request: CreateSandboxRequest,
        idempotency_key: str | None = None,
    ) -> Sandbox:
        """Start a sandbox from ``request.template`` and return it ``running``."""
        default = (
            self._policy.default_timeout_v2_s
            if request.api_version >= 2
            else self._policy.default_timeout_v1_s
        )
        timeout_s = check_timeout(
            request.timeout_s if request.timeout_s is not None else default, field="timeout"
        )
        metadata = check_metadata(request.metadata)
        network = network_config(request)
        env_vars = check_env_vars(request.env_vars)
        auto_pause_memory = check_auto_pause_memory(
            request.auto_pause_memory,
            auto_pause=request.auto_pause,
            auto_resume=request.auto_resume,
        )
        if idempotency_key is not None:
            check_idempotency_key(idempotency_key)
        # "name:tag" → that tag's build; "name" → its default tag's build, if it has one.
        name, build_id = await TemplateTagService(templates=self._templates).resolve(
            request.template, team_id=team_id
        )
        template = await self._templates.find_template(name, team_id=team_id)
        if template is None:
            raise NotFoundError(
                f"template {request.template!r} not found",
                public_message=f"Template '{request.template}' not found",
            )
        metrics.note_template(template.alias)
        hlog.bind(template=template.alias or template.id, team_id=team_id)
        if template.build_state is not TemplateBuildState.READY:
            raise InvalidArgumentError(
                f"template {request.template!r} is not ready ({template.build_state})"
            )
        if self._snapshots is not None and not sends_network(request):
            snapshot = await self._snapshots.find_snapshot(template.id, team_id=team_id)
            if snapshot is not None:  # "a snapshot and a fork carry it" (issue 13)
                network = snapshot.network
        mounts: list[VolumeMount] = []
        if request.volume_mounts:
            if self._volumes is None:
                raise InvalidArgumentError("volumeMounts: volumes are not enabled on this server")
            mounts = await self._volumes.resolve_mounts(
                team_id=team_id, requested=request.volume_mounts
            )
        quota = (
            await self._quotas.check_timeout(team_id, timeout_s)
            if self._quotas is not None
            else None
        )
        if self._placement is None:
            await self._check_capacity()
        now = self._clock()
        new = NewSandbox(
            quota=quota,
            team_id=team_id,
            template_id=template.id,
            alias=template.alias if name == template.alias else None,
            started_at=now,
            end_at=now + timedelta(seconds=timeout_s),
            envd_version=template.envd_version or self._policy.envd_version,
            cpu_count=template.cpu_count,
            memory_mb=template.memory_mb,
            disk_mb=request.disk_mb or template.disk_mb,
            metadata=metadata,
            env_vars=env_vars,
            envd_access_token=secrets.token_hex(32) if request.secure else None,
            node_id=self._node.node_id if self._placement is None else None,
            auto_pause=request.auto_pause,
            allow_internet=not network.egress.blocks_all,
            network=network,
            traffic_access_token=None
            if network.allow_public_traffic
            else secrets.token_urlsafe(24),
            auto_resume=(request.auto_pause and auto_pause_memory)
            if request.auto_resume is None
            else request.auto_resume,
            auto_pause_memory=auto_pause_memory,
            timeout_s=timeout_s,
            template_build_id=build_id,
        )
        fingerprint = request.fingerprint()
        metrics.phase("checks")
        placer = await self._placer(new, build_id=build_id, mounts=mounts)
        lacking: dict[NodeID, str] = {}  # nodes that lacked the template and could not fetch it
        while True:
            try:
                created = await self._sandboxes.create_sandbox(
                    new, idempotency_key=idempotency_key, request_hash=fingerprint, placer=placer
                )
            except NoNodeFits as exc:
                if placer is not None and placer.demand.pinned is not None:
                    raise _volume_node_unavailable(mounts, placer.demand.pinned, exc) from exc
                if not lacking:
                    raise
                # The template exists (its row is here) but no node could start it: say so.
                why = "; ".join(f"node {n}: {r}" for n, r in sorted(exc.reasons.items()))
                raise ArtifactUnavailableError(
                    f"template {request.template!r}: no node holds or could fetch it ({why})",
                    public_message=f"Template '{request.template}' is not available on any node "
                    f"that can start it right now, please retry shortly ({why})",
                    error_code="template_artifact_unavailable",
                ) from exc
            metrics.phase("store")
            hlog.bind(sandbox_id=created.sandbox.id)
            if not created.created:
                return await self._replayed(
                    created.sandbox, team_id=team_id, request=request,
                    idempotency_key=idempotency_key,
                )  # fmt: skip
            if request.mcp_servers:
                _log.info(
                    "sandbox %s asks for MCP servers %s", created.sandbox.id, request.mcp_servers
                )
            node_id = created.sandbox.node_id
            try:
                started = await self._start(created.sandbox, mounts=mounts)
            except VolumeNodeTaken as exc:
                # A create that raced this one mounted the volume first, on another node
                # (ADR 0034): this one goes there too (the row was rolled back).
                if placer is None or placer.demand.pinned is not None:
                    raise
                placer = dataclasses.replace(
                    placer, demand=dataclasses.replace(placer.demand, pinned=exc.node_id)
                )
                continue
            except UnavailableError as exc:
                # The node refused (full, failing, gone) and the row was rolled back: try
                # the next node (ADR 0025); the placer's 503 names every refusal.
                if placer is None or node_id is None:
                    raise
                await self._count(node_id, ok=False)
                if isinstance(exc, ArtifactUnavailableError):
                    lacking[node_id] = exc.message
                placer = placer.excluding(node_id, f"refused: {exc.message}")
                continue
            if node_id is not None:
                await self._count(node_id, ok=True)
            return started

    async def _placer(
        self, new: NewSandbox, *, build_id: str | None, mounts: Sequence[VolumeMount]
    ) -> Placement | None:
        if self._placement is None:
            return None
        local = [m.volume_id for m in mounts if m.backend == "local"]
        pinned = (
            pinned_node((await self._sandboxes.volume_nodes(local)).values()) if local else None
        )
        template = new.template_id
        if build_id:
            template = TemplateID(template_version_name(template, build_id))
        return Placement(
            demand=Demand(
                cpu_count=new.cpu_count, memory_mb=new.memory_mb, disk_mb=new.disk_mb,
                template=template, pinned=pinned,
            ),
            policy=self._placement,
        )  # fmt: skip

    def resume_fit(self, sandbox: Sandbox) -> tuple[NodeID, ResumeFit] | None:
        """What a resume's transaction checks (ADR 0026): the paused sandbox back on its
        node under that node's placement lock, by the create's accounting; None where
        nothing is placed (one node, no placement policy)."""
        if self._placement is None or sandbox.node_id is None:
            return None
        demand = Demand(
            cpu_count=sandbox.cpu_count, memory_mb=sandbox.memory_mb, disk_mb=sandbox.disk_mb
        )
        return sandbox.node_id, ResumeFit(demand=demand, policy=self._placement)

    async def _count(self, node_id: NodeID, *, ok: bool) -> None:
        if self._node_stats is not None:
            with contextlib.suppress(Exception):  # a counter never fails a create
                await self._node_stats.count_create(node_id, ok=ok)

    async def spec_with_volumes(self, sandbox: Sandbox) -> SandboxSpec:
        """:func:`spec_of` plus the volumes the sandbox mounts (to boot it again)."""
        spec = spec_of(sandbox)
        if self._volumes is None:
            return spec
        return dataclasses.replace(spec, volume_mounts=await self._volumes.mounts_of(sandbox.id))

    async def _check_capacity(self) -> None:
        limit = self._policy.max_sandboxes_per_node
        if limit is None:
            return
        if await self._sandboxes.count_on_node(self._node.node_id) >= limit:
            raise _no_capacity(f"node {self._node.node_id} runs {limit} sandboxes, its limit")

    async def _start(self, sandbox: Sandbox, *, mounts: Sequence[VolumeMount] = ()) -> Sandbox:
        spec = spec_of(sandbox)
        if mounts and self._volumes is not None:
            spec = dataclasses.replace(spec, volume_mounts=self._volumes.mount_specs(mounts))
        try:
            if mounts and self._volumes is not None:
                # Recorded before the node mounts anything: a volume DELETE sees it at once.
                await self._volumes.record_mounts(sandbox.id, mounts, node_id=sandbox.node_id)
            if self._artifacts is not None and sandbox.node_id is not None:
                sources = await self._artifacts.sources_for(spec.template_id, sandbox.node_id)
                spec = dataclasses.replace(spec, artifact_sources=sources)
            if self._lease_watch is not None and sandbox.node_id is not None:
                placed = await self._lease_watch.call(sandbox.node_id, self._node.create(spec))
            else:
                placed = await self._node.create(spec)
            metrics.phase("node")
            if spec.artifact_sources and self._artifacts is not None:
                await self._artifacts.record(spec.template_id, placed.node_id)  # fetched it
            return await self._sandboxes.set_state(
                sandbox.id,
                team_id=None,
                expected=SandboxState.CREATING,
                new=SandboxState.RUNNING,
                node_id=placed.node_id,
                address=placed.address,
            )
        except BaseException as exc:
            # Cancellation too: a half-made sandbox must not outlive its request. Shielded
            # so that a second cancellation cannot interrupt the rollback itself.
            await asyncio.shield(self._roll_back(sandbox.id, exc))
            if isinstance(exc, SandboxStateConflictError):
                raise ConflictError(
                    f"sandbox {sandbox.id} was killed while it was being created"
                ) from exc
            if isinstance(exc, ResourceExhaustedError):
                raise _no_capacity(exc.message) from exc
            if (
                isinstance(exc, HutchError)
                and exc.error_code is None
                and exc.code in _NODE_FAILURES
            ):
                exc.error_code = "sandbox_create_failed"  # infra's placement code
            raise

    async def _roll_back(self, sandbox_id: SandboxID, cause: BaseException) -> None:
        try:
            try:
                if isinstance(cause, NodeUnresponsiveError):
                    raise cause  # asking the silent node would wait as long again
                await self._node.kill(sandbox_id)
            except UnavailableError as exc:
                # The node does not answer (killed, partitioned, restarting): what it made of
                # the sandbox is killed later, and the row says so meanwhile: ``killing``
                # with its deadline now, so the reaper kills it once the node answers, the
                # node's reconcile destroys it when it registers again, and the lost-node
                # sweeper reports it killed with its node. The create may go on elsewhere.
                with contextlib.suppress(SandboxStateConflictError, NotFoundError):
                    await self._sandboxes.set_state(
                        sandbox_id, team_id=None, expected=SandboxState.CREATING,
                        new=SandboxState.KILLING, end_at=self._clock(),
                    )  # fmt: skip
                _log.warning(
                    "create of %s failed (%r) and its node did not answer the rollback "
                    "(%s): left to the reaper", sandbox_id, cause, exc.message,
                )  # fmt: skip
                return
            with contextlib.suppress(NotFoundError):  # a concurrent kill got there first
                await self._sandboxes.delete_sandbox(sandbox_id, team_id=None)
        except Exception as exc:
            raise CreateOutcomeUnknownError(
                f"creating sandbox {sandbox_id} failed ({cause!r}) and so did the rollback "
                f"({exc!r})",
                public_message="Creating the sandbox failed and it may still exist; "
                "do not retry with a new request, list your sandboxes first",
            ) from exc

    async def _replayed(
        self,
        sandbox: Sandbox,
        *,
        team_id: TeamID,
        request: CreateSandboxRequest,
        idempotency_key: str | None,
    ) -> Sandbox:
        """The result of a retried create: the first request's sandbox, once it runs."""
        waited = 0.0
        while sandbox.state is SandboxState.CREATING and waited < _REPLAY_WAIT_S:
            await asyncio.sleep(_REPLAY_POLL_S)
            waited += _REPLAY_POLL_S
            found = await self._sandboxes.find_sandbox(sandbox.id, team_id=team_id)
            if found is None:
                # The first request failed and was rolled back (its key went with it).
                return await self.create_sandbox(
                    team_id=team_id, request=request, idempotency_key=idempotency_key
                )
            sandbox = found
        if sandbox.state in TERMINAL_STATES:
            raise ConflictError(
                f"the sandbox {sandbox.id} created with this Idempotency-Key is {sandbox.state}"
            )
        return sandbox

    # -- read -----------------------------------------------------------------------------

    async def get_sandbox(self, *, team_id: TeamID, sandbox_id: str) -> Sandbox:
        """The team's sandbox; killed ones (and others' ones) are not found."""
        sandbox = await self._sandboxes.find_sandbox(sandbox_id, team_id=team_id)
        if sandbox is None or public_state(sandbox.state) is None:
            raise _not_found(sandbox_id)
        return sandbox

    async def list_sandboxes(self, *, team_id: TeamID, query: ListSandboxesQuery) -> SandboxPage:
        """One page of the team's live sandboxes, newest first by default."""
        if not 1 <= query.limit <= 100:
            raise InvalidArgumentError("limit must be between 1 and 100")
        wanted = _wanted_states(query)
        states: set[SandboxState] = set()
        if "running" in wanted:
            states |= RUNNING_VIEW
        if "paused" in wanted:
            states |= PAUSED_VIEW
        return await self._sandboxes.list_sandboxes(
            team_id=team_id,
            states=states,
            metadata=check_metadata(query.metadata),
            started_after=query.started_after,
            template=query.template,
            order=query.order,
            limit=query.limit,
            next_token=query.next_token,
        )

    async def count_running(self, *, team_id: TeamID, query: ListSandboxesQuery) -> int | None:
        """How many running sandboxes pass the query's filters, ignoring pagination
        (``X-Total-Running``); ``None`` when the query does not ask for running ones."""
        if "running" not in _wanted_states(query):
            return None
        return await self._sandboxes.count_sandboxes(
            team_id=team_id,
            states=RUNNING_VIEW,
            metadata=check_metadata(query.metadata),
            started_after=query.started_after,
            template=query.template,
        )

    async def get_metrics(
        self,
        *,
        team_id: TeamID,
        sandbox_id: str,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[SandboxMetrics]:
        """The node's resource samples of a live sandbox."""
        sandbox = await self.get_sandbox(team_id=team_id, sandbox_id=sandbox_id)
        return list(await self._node.metrics(sandbox.id, start=start, end=end))

    async def get_latest_metrics(
        self, *, team_id: TeamID, sandbox_ids: Collection[str]
    ) -> dict[SandboxID, SandboxMetrics]:
        """The newest sample of each of the team's running sandboxes among ``sandbox_ids``;
        ids that are unknown, another team's, killed or not sampled yet are left out."""
        if len(sandbox_ids) > 100:
            raise InvalidArgumentError("sandbox_ids: at most 100 ids")
        out: dict[SandboxID, SandboxMetrics] = {}
        for sandbox_id in sandbox_ids:
            sandbox = await self._sandboxes.find_sandbox(sandbox_id, team_id=team_id)
            if sandbox is None or public_state(sandbox.state) != "running":
                continue
            samples: Sequence[SandboxMetrics] = ()
            with contextlib.suppress(NotFoundError):  # killed meanwhile
                samples = await self._node.metrics(sandbox.id, start=None, end=None)
            if samples:
                out[sandbox.id] = samples[-1]
        return out

    async def get_logs(
        self, *, team_id: TeamID, sandbox_id: str, query: LogsQuery
    ) -> list[SandboxLogLine]:
        """The sandbox's log lines; also for a killed sandbox, while the node keeps them.
        A sandbox reported killed without a kill (its node lost, ADR 0025) answers one line
        saying why, without asking its node."""
        sandbox = await self._sandboxes.get_sandbox(sandbox_id, team_id=team_id)
        if sandbox.killed_reason is None:
            return select_log_lines(await self._node.logs(sandbox.id), query)
        # Its node is lost (a stopped host may hold the connection open for minutes) or
        # no longer had it: nothing to ask there; the reason is the log.
        lines = [
            SandboxLogLine(
                timestamp=sandbox.started_at, level="error",
                message=f"sandbox killed: {sandbox.killed_reason}", fields={"logger": "hutch.api"},
            )
        ]  # fmt: skip
        return select_log_lines(lines, query)

    # -- timeouts -------------------------------------------------------------------------

    async def set_timeout(self, *, team_id: TeamID, sandbox_id: str, timeout_s: int) -> Sandbox:
        """Make the sandbox expire ``timeout_s`` from now (shorter or longer; 0: now)."""
        check_timeout(timeout_s, field="timeout", minimum=0)
        return await self._set_end(team_id, sandbox_id, timeout_s, extend_only=False)

    async def refresh(self, *, team_id: TeamID, sandbox_id: str, duration_s: int | None) -> None:
        """Keep the sandbox alive at least ``duration_s`` more (v1 ``refreshes``)."""
        duration = self._policy.default_timeout_v1_s if duration_s is None else duration_s
        check_timeout(duration, field="duration", minimum=0)
        await self._set_end(team_id, sandbox_id, duration, extend_only=True)

    async def connect(
        self, *, team_id: TeamID, sandbox_id: str, timeout_s: int | None, api_version: int = 2
    ) -> Sandbox:
        """Attach to a running sandbox; ``timeout_s`` only ever extends its deadline."""
        if timeout_s is None:
            if api_version < 2:
                raise InvalidArgumentError("timeout is required")
            timeout_s = self._policy.default_timeout_v2_s
        check_timeout(timeout_s, field="timeout", minimum=0)
        sandbox = await self.get_sandbox(team_id=team_id, sandbox_id=sandbox_id)
        if sandbox.state in PAUSED_VIEW:
            raise ConflictError(f"sandbox {sandbox.id} is paused; resuming is not supported yet")
        return await self._set_end(team_id, sandbox.id, timeout_s, extend_only=True)

    async def _set_end(
        self, team_id: TeamID, sandbox_id: str, seconds: int, *, extend_only: bool
    ) -> Sandbox:
        now = self._clock()
        try:
            sandbox = await self._sandboxes.set_end_at(
                sandbox_id,
                team_id=team_id,
                end_at=now + timedelta(seconds=seconds),
                extend_only=extend_only,
            )
        except SandboxStateConflictError as exc:  # being killed or killed: gone for clients
            raise _not_found(sandbox_id) from exc
        if sandbox.end_at <= now and self.on_deadline_passed is not None:
            self.on_deadline_passed()
        return sandbox

    # -- kill -----------------------------------------------------------------------------

    async def kill_sandbox(self, *, team_id: TeamID | None, sandbox_id: str) -> Sandbox:
        """Kill the sandbox (``team_id`` ``None``: any team's, for the reaper).

        A sandbox already being killed, or killed, is not found: ``kill()`` then says False.
        Holds the sandbox's lock, so a kill during a pause or resume waits for it to end
        and then kills the paused (or resumed) sandbox.
        """
        async with self._locks.hold(sandbox_id):
            return await self._kill_locked(team_id, sandbox_id)

    @metrics.observed("kill")
    async def _kill_locked(self, team_id: TeamID | None, sandbox_id: str) -> Sandbox:
        try:
            sandbox = await self._sandboxes.set_state(
                sandbox_id, team_id=team_id, expected=_KILLABLE, new=SandboxState.KILLING
            )
        except SandboxStateConflictError as exc:
            raise _not_found(sandbox_id) from exc
        except NotFoundError as exc:
            raise _not_found(sandbox_id) from exc
        try:
            await self._node.kill(sandbox.id)
        except UnavailableError:
            # Its node does not answer (ADR 0033): the row stays ``killing`` (gone for
            # clients) with its deadline now, so the reaper kills it as soon as the node
            # answers, and the lost-node sweeper reports it killed if it never does.
            with contextlib.suppress(SandboxStateConflictError, NotFoundError):
                await self._sandboxes.set_state(
                    sandbox.id, team_id=None, expected=SandboxState.KILLING,
                    new=SandboxState.KILLING, end_at=self._clock(),
                )  # fmt: skip
            raise
        try:
            return await self._sandboxes.mark_killed(sandbox.id, team_id=None)
        except NotFoundError:
            return sandbox  # a create that was rolled back deleted the row meanwhile

    async def finish_kill(self, sandbox_id: str) -> None:
        """Complete a kill left half-done (row ``killing``): node kill, then ``killed``."""
        await self._node.kill(SandboxID(sandbox_id))
        await self._sandboxes.mark_killed(sandbox_id, team_id=None)


def _volume_node_unavailable(
    mounts: Sequence[VolumeMount], node_id: NodeID, exc: NoNodeFits
) -> UnavailableError:
    """The 503 of a create whose local volume's node cannot take it (ADR 0034): never a
    placement elsewhere, where the volume's data is not."""
    names = ", ".join(f"'{m.name}' ({m.volume_id})" for m in mounts if m.backend == "local")
    why = exc.reasons.get(node_id, "not registered")
    return UnavailableError(
        f"local volume {names} lives on node {node_id}, which cannot take the sandbox: {why}",
        public_message=f"Failed to place sandbox: its local volume {names} lives on node "
        f"{node_id}, which cannot take it right now ({why}); retry later, or mount a volume "
        "of another node",
        error_code="volume_node_unavailable",
    )
