"""The control plane's domain objects: plain frozen dataclasses, no SQL, no HTTP.

The store (``api/store``) returns these; the service layer passes them around; only
``api/http/schemas.py`` turns them into E2B's camelCase wire shapes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Final

from hutch.shared.egress import DEFAULT_POLICY, EgressPolicy, policy_from_json
from hutch.shared.errors import ConflictError
from hutch.shared.ids import ApiKeyID, NodeID, SandboxID, TeamID, TemplateID, VolumeID


class SandboxState(StrEnum):
    """Where a sandbox is in its life (ARCHITECTURE.md, "Lifecycle").

    ``creating → running → (pausing → paused → resuming → running) → killing → killed``.
    The E2B API only ever shows ``running`` or ``paused``; the transient states exist so
    that every transition is recorded *before* it is acted on and can be reconciled after
    a crash.
    """

    CREATING = "creating"
    RUNNING = "running"
    PAUSING = "pausing"
    PAUSED = "paused"
    RESUMING = "resuming"
    KILLING = "killing"
    KILLED = "killed"


#: States in which a sandbox holds resources on its node (what a node's limit counts).
NODE_BUSY_STATES: Final = frozenset(
    {
        SandboxState.CREATING,
        SandboxState.RUNNING,
        SandboxState.PAUSING,
        SandboxState.RESUMING,
        SandboxState.KILLING,
    }
)

#: States that are over: the sandbox can no longer change except by deletion.
TERMINAL_STATES: Final = frozenset({SandboxState.KILLING, SandboxState.KILLED})


class SortOrder(StrEnum):
    """Order of a sandbox listing by ``started_at`` (ties broken by id)."""

    ASC = "asc"
    DESC = "desc"


class TemplateBuildState(StrEnum):
    """Build status of a template, as E2B's build-status endpoint names it."""

    WAITING = "waiting"
    BUILDING = "building"
    READY = "ready"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class TeamSample:
    """One point of a team's usage series (``GET /teams/{id}/metrics``)."""

    at: datetime
    concurrent: int
    #: Sandboxes started per second since the previous sample.
    start_rate: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Team:
    """A tenant. Every sandbox, template and key belongs to exactly one team."""

    id: TeamID
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiKey:
    """An API key as stored: never the key itself, only a mask for display."""

    id: ApiKeyID
    team_id: TeamID
    name: str
    #: e.g. ``"e2b_3f…9a1c"``: enough to recognise a key, useless to an attacker.
    mask: str
    created_at: datetime
    #: The admin role: may act on every team (docs/adr/0015-teams-roles-quotas.md).
    admin: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class CreatedApiKey:
    """The result of creating a key: the only time the plaintext ``secret`` exists."""

    api_key: ApiKey
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Template:
    """A template (or, later, a snapshot) that sandboxes are created from."""

    id: TemplateID
    team_id: TeamID
    alias: str | None
    build_state: TemplateBuildState
    cpu_count: int
    memory_mb: int
    disk_mb: int
    envd_version: str | None
    public: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class TemplateTag:
    """One tag of a template: ``name:tag`` starts sandboxes from build ``build_id``."""

    template_id: TemplateID
    tag: str
    build_id: str
    created_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class NewTemplate:
    """What :meth:`TemplateStore.create_template` needs."""

    team_id: TeamID
    alias: str | None = None
    id: TemplateID | None = None
    build_state: TemplateBuildState = TemplateBuildState.WAITING
    cpu_count: int = 2
    memory_mb: int = 512
    disk_mb: int = 1024
    envd_version: str | None = None
    public: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkConfig:
    """A sandbox's ``network`` (E2B's ``SandboxNetworkConfig``): what it may reach and who
    may reach its ports through the proxy."""

    egress: EgressPolicy = DEFAULT_POLICY
    #: False: the proxy wants the ``e2b-traffic-access-token`` header (the sandbox's
    #: traffic token) on every request to its ports.
    allow_public_traffic: bool = True
    #: The ``Host`` the proxy sends to the sandbox's port (``${PORT}`` is replaced).
    mask_request_host: str | None = None

    def to_json(self) -> dict[str, object]:
        """The store's ``network`` column."""
        out: dict[str, object] = {
            "egress": self.egress.to_json(),
            "allow_public_traffic": self.allow_public_traffic,
        }
        if self.mask_request_host is not None:
            out["mask_request_host"] = self.mask_request_host
        return out

    @classmethod
    def from_json(cls, data: object) -> NetworkConfig:
        """Inverse of :meth:`to_json` (``None``: the default)."""
        if not isinstance(data, dict):
            return cls()
        mask = data.get("mask_request_host")
        return cls(
            egress=policy_from_json(data.get("egress")),
            allow_public_traffic=bool(data.get("allow_public_traffic", True)),
            mask_request_host=str(mask) if mask is not None else None,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Sandbox:
    """One sandbox as the control plane knows it."""

    id: SandboxID
    team_id: TeamID
    template_id: TemplateID
    #: The template alias the sandbox was created by, if any (E2B's ``alias``).
    alias: str | None
    state: SandboxState
    metadata: Mapping[str, str]
    #: Kept for resume and pool personalisation (E2B keeps them too); see docs/store.md
    #: on secrets at rest.
    env_vars: Mapping[str, str] = field(repr=False)
    cpu_count: int
    memory_mb: int
    disk_mb: int
    started_at: datetime
    #: The timeout deadline: the reaper acts once ``end_at <= now``.
    end_at: datetime
    envd_access_token: str | None = field(repr=False)
    envd_version: str
    node_id: NodeID | None
    #: Where the proxy reaches the sandbox (its private IP), once it has one.
    address: str | None
    auto_pause: bool
    allow_internet: bool
    #: False: the timeout's auto-pause keeps only the filesystem (``autoPauseMemory``).
    auto_pause_memory: bool = True
    #: Bumped by every write: lets callers do optimistic concurrency.
    version: int
    #: ``"full"`` (memory kept) or ``"filesystem"``: how its last pause went (ADR 0004).
    pause_mode: str | None = None
    #: Proxy traffic to the paused sandbox resumes it.
    auto_resume: bool = False
    #: The timeout it was created with (seconds); a resume by traffic restarts it.
    timeout_s: int | None = None
    #: The template build a tag chose at create (``name:tag``); None: the current one.
    template_build_id: str | None = None
    network: NetworkConfig = field(default_factory=NetworkConfig)
    #: What ``e2b-traffic-access-token`` must carry when ``allowPublicTraffic`` is false.
    traffic_access_token: str | None = field(default=None, repr=False)
    #: Why the control plane reported it killed when nobody asked (its node was lost,
    #: or came back without it); shown in its logs (ADR 0025).
    killed_reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TeamQuotas:
    """A team's limits (ADR 0015). As stored: ``None`` means "the settings' default"; as
    enforced (after :meth:`over`): ``None`` or 0 means "no limit"."""

    max_running_sandboxes: int | None = None
    max_vcpus: int | None = None
    max_memory_mb: int | None = None
    max_timeout_s: int | None = None
    max_volume_bytes: int | None = None
    max_paused_sandboxes: int | None = None
    max_concurrent_builds: int | None = None

    def over(self, defaults: TeamQuotas) -> TeamQuotas:
        """These overrides on top of ``defaults``."""
        return TeamQuotas(
            **{
                name: getattr(self, name) if getattr(self, name) is not None
                else getattr(defaults, name)
                for name in QUOTA_FIELDS
            }
        )  # fmt: skip

    def limit(self, name: str) -> int | None:
        """The enforced limit ``name``; ``None``: none."""
        value = getattr(self, name)
        return value or None

    def limits_sandboxes(self) -> bool:
        return any(self.limit(n) for n in ("max_running_sandboxes", "max_vcpus", "max_memory_mb"))


#: :class:`TeamQuotas`' fields, in the order they are shown.
QUOTA_FIELDS: Final = (
    "max_running_sandboxes",
    "max_vcpus",
    "max_memory_mb",
    "max_timeout_s",
    "max_volume_bytes",
    "max_paused_sandboxes",
    "max_concurrent_builds",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class NewSandbox:
    """What :meth:`SandboxStore.create_sandbox` needs; the store adds id and version."""

    team_id: TeamID
    template_id: TemplateID
    started_at: datetime
    end_at: datetime
    envd_version: str
    cpu_count: int
    memory_mb: int
    disk_mb: int
    id: SandboxID | None = None
    alias: str | None = None
    state: SandboxState = SandboxState.CREATING
    metadata: Mapping[str, str] = field(default_factory=dict)
    env_vars: Mapping[str, str] = field(default_factory=dict, repr=False)
    envd_access_token: str | None = field(default=None, repr=False)
    node_id: NodeID | None = None
    address: str | None = None
    auto_pause: bool = False
    allow_internet: bool = True
    auto_resume: bool = False
    auto_pause_memory: bool = True
    timeout_s: int | None = None
    template_build_id: str | None = None
    network: NetworkConfig = field(default_factory=NetworkConfig)
    traffic_access_token: str | None = field(default=None, repr=False)
    #: The team's enforced quotas: the store reserves room for this sandbox under them in
    #: the insert's own transaction (``None``: no check).
    quota: TeamQuotas | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CreatedSandbox:
    """The result of an (idempotent) create: ``created`` is False for a replayed request."""

    sandbox: Sandbox
    created: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxPage:
    """One page of a listing; ``next_token`` is ``None`` on the last page."""

    items: list[Sandbox]
    next_token: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """A template made from a sandbox's files (``Sandbox.create(snapshot_id)``)."""

    id: TemplateID
    team_id: TeamID
    sandbox_id: SandboxID
    #: The name it was given (the template's alias), if any.
    alias: str | None
    created_at: datetime
    #: The source's network policy when it was taken: a create from the snapshot (and so
    #: a fork) gets it unless the create sends its own (docs/network.md).
    network: NetworkConfig = field(default_factory=NetworkConfig)


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotPage:
    """One page of snapshots; ``next_token`` is ``None`` on the last page."""

    items: list[Snapshot]
    next_token: str | None


class SandboxStateConflictError(ConflictError):
    """A sandbox was not in a state the operation allows; ``state`` is the one it was in.

    The service tells apart e.g. "already paused" (E2B's 409 for pause) by ``state``.
    """

    def __init__(self, sandbox_id: SandboxID, state: SandboxState, *, wanted: str) -> None:
        super().__init__(
            f"sandbox {sandbox_id} is {state} (expected {wanted})",
            public_message=f"Sandbox {sandbox_id} is {state}",
        )
        self.sandbox_id = sandbox_id
        self.state = state


@dataclass(frozen=True, slots=True, kw_only=True)
class Volume:
    """A team's named filesystem with a size quota (docs/volumes.md)."""

    id: VolumeID
    team_id: TeamID
    name: str
    quota_bytes: int
    #: The ``VolumeBackend`` holding its data (``"local"`` or ``"s3"``).
    backend: str
    #: Signs the volume's content tokens; never leaves the server.
    token_secret: str
    created_at: datetime
    #: A local volume's node, chosen at create (ADR 0034); None: S3, or a local volume made
    #: before volumes lived on nodes (claimed by the first call that needs its node).
    node_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class VolumeMount:
    """A volume mounted read-write into a sandbox at ``path``."""

    volume_id: VolumeID
    #: The volume's name (what E2B's ``volumeMounts`` carries).
    name: str
    path: str
    #: The volume's ``VolumeBackend``.
    backend: str = "local"
