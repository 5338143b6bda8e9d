"""What the service layer may rely on: the store's Protocols (no SQLAlchemy imported here).

The SQL implementations (``Sql*Store``) satisfy these structurally; ``app.py`` hands them
to the services, and tests may hand in fakes. Errors are the shared tree's:
:class:`~hutch.shared.errors.NotFoundError` for absent (or another team's) records,
:class:`~hutch.shared.errors.AlreadyExistsError` for taken names and ids,
:class:`~hutch.api.models.SandboxStateConflictError` for a failed compare-and-set.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import UTC, datetime
from typing import Protocol

from hutch.api.models import (
    ApiKey,
    CreatedApiKey,
    CreatedSandbox,
    NetworkConfig,
    NewSandbox,
    NewTemplate,
    Sandbox,
    SandboxPage,
    SandboxState,
    Snapshot,
    SnapshotPage,
    SortOrder,
    Team,
    TeamQuotas,
    TeamSample,
    Template,
    TemplateBuildState,
    TemplateTag,
    Volume,
    VolumeMount,
)
from hutch.api.nodes_model import NodeFit, Placer
from hutch.shared.ids import ApiKeyID, NodeID, SandboxID, TeamID, TemplateID, VolumeID

#: Where the store gets "now" for the timestamps it sets itself (created_at, ...).
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class TeamStore(Protocol):
    """Teams. See :class:`hutch.api.store.teams.SqlTeamStore`."""

    async def create_team(self, *, name: str, team_id: TeamID | None = None) -> Team: ...
    async def ensure_default_team(self) -> Team: ...
    async def find_team(self, team_id: TeamID) -> Team | None: ...
    async def get_team(self, team_id: TeamID) -> Team: ...
    async def find_team_by_name(self, name: str) -> Team | None: ...
    async def get_team_by_name(self, name: str) -> Team: ...
    async def list_teams(self) -> list[Team]: ...
    async def delete_team(self, team_id: TeamID) -> None: ...
    async def get_quotas(self, team_id: TeamID) -> TeamQuotas: ...
    async def set_quotas(self, team_id: TeamID, changes: dict[str, int | None]) -> TeamQuotas: ...


class ApiKeyStore(Protocol):
    """API keys. See :class:`hutch.api.store.keys.SqlApiKeyStore`."""

    async def create_api_key(
        self, team_id: TeamID, *, name: str = "", admin: bool = False
    ) -> CreatedApiKey: ...
    async def find_team_by_api_key(self, key: str) -> Team | None: ...
    async def find_caller(self, key: str) -> tuple[Team, ApiKey] | None: ...
    async def get_team_by_api_key(self, key: str) -> Team: ...
    async def list_api_keys(self, team_id: TeamID) -> list[ApiKey]: ...
    async def delete_api_key(self, key_id: ApiKeyID, *, team_id: TeamID) -> None: ...
    async def rename_api_key(self, key_id: str, *, team_id: TeamID, name: str) -> ApiKey: ...


class TemplateStore(Protocol):
    """Templates. See :class:`hutch.api.store.templates.SqlTemplateStore`."""

    async def create_template(self, new: NewTemplate) -> Template: ...
    async def find_template_any_team(self, id_or_alias: str) -> Template | None: ...
    async def find_template(self, id_or_alias: str, *, team_id: TeamID) -> Template | None: ...
    async def get_template(self, id_or_alias: str, *, team_id: TeamID) -> Template: ...
    async def list_templates(self, *, team_id: TeamID) -> list[Template]: ...
    async def set_build_state(
        self,
        template_id: TemplateID,
        state: TemplateBuildState,
        *,
        envd_version: str | None = None,
    ) -> Template: ...
    async def delete_template(self, template_id: TemplateID, *, team_id: TeamID) -> None: ...
    async def set_public(
        self, template_id: TemplateID, *, team_id: TeamID, public: bool
    ) -> Template: ...
    async def set_tags(self, template_id: TemplateID, tags: list[str], build_id: str) -> None: ...
    async def list_tags(self, template_id: TemplateID) -> list[TemplateTag]: ...
    async def delete_tags(self, template_id: TemplateID, tags: list[str]) -> None: ...


class SandboxStore(Protocol):
    """Sandboxes. See :class:`hutch.api.store.sandboxes.SqlSandboxStore` for semantics."""

    async def create_sandbox(
        self,
        new: NewSandbox,
        *,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
        placer: Placer | None = None,
    ) -> CreatedSandbox: ...
    async def volume_nodes(self, volume_ids: Collection[str]) -> dict[str, NodeID]: ...
    async def find_sandbox(self, sandbox_id: str, *, team_id: TeamID | None) -> Sandbox | None: ...
    async def get_sandbox(self, sandbox_id: str, *, team_id: TeamID | None) -> Sandbox: ...
    async def list_sandboxes(
        self,
        *,
        team_id: TeamID,
        states: Collection[SandboxState] | None = None,
        metadata: Mapping[str, str] | None = None,
        started_after: datetime | None = None,
        template: str | None = None,
        order: SortOrder = SortOrder.DESC,
        limit: int = 100,
        next_token: str | None = None,
    ) -> SandboxPage: ...
    async def count_sandboxes(
        self,
        *,
        team_id: TeamID,
        states: Collection[SandboxState],
        metadata: Mapping[str, str] | None = None,
        started_after: datetime | None = None,
        template: str | None = None,
    ) -> int: ...
    async def list_expired(
        self,
        now: datetime,
        *,
        states: Collection[SandboxState] = ...,
        limit: int = 100,
    ) -> list[Sandbox]: ...
    async def list_stale_creates(
        self, *, started_before: datetime, limit: int = 100
    ) -> list[Sandbox]: ...
    async def team_load(
        self, team_id: TeamID, *, states: Collection[SandboxState] = ...
    ) -> tuple[int, int, int]: ...
    async def usage_by_team(
        self, *, states: Collection[SandboxState], started_after: datetime
    ) -> dict[TeamID, tuple[int, int]]: ...
    async def count_live(self) -> list[tuple[TeamID, str | None, str, int]]: ...
    async def count_on_node(
        self, node_id: NodeID, *, states: Collection[SandboxState] = ...
    ) -> int: ...
    async def set_state(
        self,
        sandbox_id: str,
        *,
        team_id: TeamID | None,
        expected: SandboxState | Collection[SandboxState],
        new: SandboxState,
        expected_version: int | None = None,
        end_at: datetime | None = None,
        node_id: NodeID | None = None,
        address: str | None = None,
        pause_mode: str | None = None,
        quota: TeamQuotas | None = None,
        fit: tuple[NodeID, NodeFit] | None = None,
    ) -> Sandbox: ...
    async def set_end_at(
        self,
        sandbox_id: str,
        *,
        team_id: TeamID | None,
        end_at: datetime,
        extend_only: bool = False,
    ) -> Sandbox: ...
    async def set_network(
        self, sandbox_id: str, network: NetworkConfig, *, team_id: TeamID | None
    ) -> Sandbox: ...
    async def mark_killed(
        self, sandbox_id: str, *, team_id: TeamID | None, reason: str | None = None
    ) -> Sandbox: ...
    async def kill_on_node(self, node_id: NodeID, *, reason: str) -> list[Sandbox]: ...
    async def delete_sandbox(self, sandbox_id: str, *, team_id: TeamID | None) -> None: ...
    async def patch_metadata(
        self,
        sandbox_id: str,
        patch: Mapping[str, str | None],
        *,
        team_id: TeamID | None,
        required_states: Collection[SandboxState] | None = ...,
    ) -> dict[str, str]: ...


class VolumeStore(Protocol):
    """Volumes. See :class:`hutch.api.store.volumes.SqlVolumeStore`."""

    async def create_volume(
        self,
        *,
        volume_id: VolumeID,
        team_id: TeamID,
        name: str,
        quota_bytes: int,
        backend: str,
        token_secret: str,
        max_total_bytes: int | None = None,
        node_id: str | None = None,
    ) -> Volume: ...
    async def find_volume(self, id_or_name: str, *, team_id: TeamID | None) -> Volume | None: ...
    async def get_volume(self, id_or_name: str, *, team_id: TeamID | None) -> Volume: ...
    async def list_volumes(self, *, team_id: TeamID | None) -> list[Volume]: ...
    async def delete_volume(self, volume_id: VolumeID, *, team_id: TeamID) -> None: ...
    async def add_mounts(
        self, sandbox_id: SandboxID, mounts: Iterable[VolumeMount], *, node_id: str | None = None
    ) -> None: ...
    async def claim_volume_node(self, volume_id: VolumeID, node_id: str) -> NodeID: ...
    async def mounting_sandboxes(self, volume_id: VolumeID) -> list[SandboxID]: ...
    async def mounts_of(self, sandbox_id: SandboxID) -> list[VolumeMount]: ...
    async def mounts_of_many(
        self, sandbox_ids: Collection[SandboxID]
    ) -> dict[SandboxID, list[VolumeMount]]: ...


class SecretStore(Protocol):
    """Secrets shared by every api. See :class:`hutch.api.store.secrets.SqlSecretStore`."""

    async def get_or_create(self, name: str, make: Callable[[], str]) -> str: ...


class SnapshotStore(Protocol):
    """Snapshots. See :class:`hutch.api.store.snapshots.SqlSnapshotStore`."""

    async def record_snapshot(
        self,
        snapshot_id: TemplateID,
        *,
        team_id: TeamID,
        sandbox_id: SandboxID,
        network: NetworkConfig | None = None,
    ) -> Snapshot: ...
    async def find_snapshot(
        self, snapshot_id: TemplateID, *, team_id: TeamID
    ) -> Snapshot | None: ...
    async def list_snapshots(
        self,
        *,
        team_id: TeamID,
        sandbox_id: str | None = None,
        name: str | None = None,
        limit: int = 100,
        next_token: str | None = None,
    ) -> SnapshotPage: ...


class UsageSampleStore(Protocol):
    """Team usage samples. See :class:`hutch.api.store.usage.SqlUsageSampleStore`."""

    async def record(
        self, at: datetime, samples: Mapping[TeamID, tuple[int, float]], *, prune_before: datetime
    ) -> int: ...
    async def series(
        self, team_id: TeamID, *, start: datetime, end: datetime
    ) -> list[TeamSample]: ...
    async def peak(
        self, team_id: TeamID, metric: str, *, start: datetime, end: datetime
    ) -> TeamSample | None: ...
    async def last_active(self) -> dict[TeamID, datetime]: ...
