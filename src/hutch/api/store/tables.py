"""The schema, as SQLAlchemy Core tables (the migrations in ``migrations/`` create it).

Portable by construction: only types that mean the same on SQLite and PostgreSQL, times as
UTC (:class:`UTCDateTime`), JSON kept as text where nothing queries inside it, and sandbox
metadata in its own key/value table so that the list filter is a plain indexed join on
both databases (docs/store.md explains the choice).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.sql.expression import false, text, true
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC ``datetime`` on both databases, with microseconds.

    PostgreSQL stores ``timestamptz``. SQLite has no time type: SQLAlchemy stores a
    fixed-width ``YYYY-MM-DD HH:MM:SS.ffffff`` string, which sorts and compares correctly
    as text as long as every value is UTC, so this type converts to UTC on the way in and
    attaches UTC on the way out. Naive datetimes are refused: they are always a bug.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given to the store; use UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)

teams = Table(
    "teams",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("created_at", UTCDateTime(), nullable=False),
    # 0009 (quotas): an admin's overrides; null: the settings' default, 0: no limit.
    Column("max_running_sandboxes", Integer, nullable=True),
    Column("max_vcpus", Integer, nullable=True),
    Column("max_memory_mb", Integer, nullable=True),
    Column("max_timeout_s", Integer, nullable=True),
    Column("max_volume_bytes", BigInteger, nullable=True),
    Column("max_paused_sandboxes", Integer, nullable=True),
    Column("max_concurrent_builds", Integer, nullable=True),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("team_id", String(64), ForeignKey("teams.id", ondelete="CASCADE"), nullable=False),
    # sha256 hex of the whole key; the key itself is never stored.
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("mask", String(64), nullable=False),
    Column("name", String(255), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    # 0008 (teams): an admin key may act on every team (docs/adr/0015-teams-roles-quotas.md).
    Column("admin", Boolean, nullable=False, server_default=false()),
    Index(None, "team_id"),
)

templates = Table(
    "templates",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("team_id", String(64), ForeignKey("teams.id", ondelete="CASCADE"), nullable=False),
    # Globally unique, as E2B's aliases are ("base" means one template for everybody).
    Column("alias", String(255), nullable=True, unique=True),
    Column("build_state", String(16), nullable=False),
    Column("cpu_count", Integer, nullable=False),
    Column("memory_mb", Integer, nullable=False),
    Column("disk_mb", Integer, nullable=False),
    Column("envd_version", String(32), nullable=True),
    Column("public", Boolean, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Index(None, "team_id"),
)

# 0006: E2B template tags: ``name:tag`` names one build of a template (docs/templates.md).
template_tags = Table(
    "template_tags",
    metadata,
    Column(
        "template_id",
        String(64),
        ForeignKey("templates.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("tag", String(128), nullable=False),
    Column("build_id", String(64), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("template_id", "tag"),
)

sandboxes = Table(
    "sandboxes",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("team_id", String(64), ForeignKey("teams.id", ondelete="CASCADE"), nullable=False),
    # No foreign key: a template may be deleted while sandboxes made from it live on, and
    # snapshots (issue 6) will be templates owned by other rows' lifecycles.
    Column("template_id", String(64), nullable=False),
    Column("alias", String(255), nullable=True),
    Column("state", String(16), nullable=False),
    Column("cpu_count", Integer, nullable=False),
    Column("memory_mb", Integer, nullable=False),
    Column("disk_mb", Integer, nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("end_at", UTCDateTime(), nullable=False),
    Column("envd_access_token", String(255), nullable=True),
    Column("envd_version", String(32), nullable=False),
    Column("node_id", String(64), nullable=True),
    Column("address", String(64), nullable=True),
    Column("auto_pause", Boolean, nullable=False),
    Column("allow_internet", Boolean, nullable=False),
    # JSON object of the create request's env vars (kept for resume and pool
    # personalisation; nothing queries inside it, so text is the portable choice).
    Column("env_vars", Text, nullable=False),
    Column("version", Integer, nullable=False),
    # 0003 (pause/resume): mode of the last pause (full | filesystem), auto-resume by
    # traffic, and the create-time timeout that a resume restarts.
    Column("pause_mode", String(16), nullable=True),
    Column("auto_resume", Boolean, nullable=False, server_default=false()),
    Column("timeout_s", Integer, nullable=True),
    # 0006 (template tags): the template build the sandbox was created from when a tag
    # chose it ("name:tag"); None: the template's current version.
    Column("template_build_id", String(64), nullable=True),
    # 0007 (filesystem-only auto-pause): false when the timeout's auto-pause keeps only
    # the filesystem (``autoPauseMemory: false``).
    Column("auto_pause_memory", Boolean, nullable=False, server_default=true()),
    # 0010 (network policy): JSON of the sandbox's ``network`` (egress policy, public
    # traffic, host mask); null: the default. And the traffic token the proxy checks.
    Column("network", Text, nullable=True),
    Column("traffic_access_token", String(255), nullable=True),
    # 0014 (membership, ADR 0025): why it was reported killed without a kill (its node
    # was lost, or came back without it); its logs say so.
    Column("killed_reason", Text, nullable=True),
    # The listing's keyset: WHERE team_id = ? ORDER BY started_at, id.
    Index(None, "team_id", "started_at", "id"),
    # The reaper: WHERE state = 'running' AND end_at <= now.
    Index(None, "state", "end_at"),
    # A node's load: WHERE node_id = ? AND state IN (...).
    Index(None, "node_id", "state"),
)

sandbox_metadata = Table(
    "sandbox_metadata",
    metadata,
    Column(
        "sandbox_id",
        String(64),
        ForeignKey("sandboxes.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("key", String(256), nullable=False),
    Column("value", Text, nullable=False),
    PrimaryKeyConstraint("sandbox_id", "key"),
    # The list filter: EXISTS (... WHERE key = ? AND value = ? AND sandbox_id = s.id).
    Index(None, "key", "value"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("team_id", String(64), ForeignKey("teams.id", ondelete="CASCADE"), nullable=False),
    Column("key", String(255), nullable=False),
    # What the key was used for ("sandbox.create"); reusing it for another operation is a
    # conflict rather than a silent replay.
    Column("operation", String(64), nullable=False),
    # A digest of the request, when the caller gives one: a different body under the same
    # key is a conflict (the client reused a key by mistake).
    Column("request_hash", String(64), nullable=True),
    Column(
        "sandbox_id",
        String(64),
        ForeignKey("sandboxes.id", ondelete="CASCADE"),
        nullable=True,
    ),
    Column("created_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("team_id", "key"),
    # ON DELETE CASCADE from sandboxes would scan the table without it.
    Index(None, "sandbox_id"),
)

volumes = Table(
    "volumes",
    metadata,
    Column("id", String(64), primary_key=True),
    # Deleting a team deletes its volume rows (the backend's data is removed by the
    # service, never by a cascade); deleting a team's API keys leaves both alone.
    Column("team_id", String(64), ForeignKey("teams.id", ondelete="CASCADE"), nullable=False),
    # Unique within a team (409 on a clash); another team may use the same name.
    Column("name", String(255), nullable=False),
    Column("quota_bytes", BigInteger, nullable=False),
    # Which VolumeBackend holds the data ("local", "s3").
    Column("backend", String(16), nullable=False),
    # Signs this volume's content tokens (HMAC-SHA256); never sent to a client.
    Column("token_secret", String(64), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    # A local volume's node (ADR 0034): the node of its first mount, claimed in the
    # transaction that records that mount; every later create that mounts it is placed
    # there. NULL: never mounted (or S3, which any node mounts). No foreign key: the
    # volume keeps naming its node after the node leaves (the 503 says which).
    Column("node_id", String(64), nullable=True),
    UniqueConstraint("team_id", "name"),
)

sandbox_volume_mounts = Table(
    "sandbox_volume_mounts",
    metadata,
    # Rows go with their sandbox; a volume with rows of live sandboxes is not deleted
    # (409, or ``force`` kills those sandboxes first), so no foreign key to volumes.
    Column(
        "sandbox_id",
        String(64),
        ForeignKey("sandboxes.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("volume_id", String(64), nullable=False),
    Column("path", String(1024), nullable=False),
    PrimaryKeyConstraint("sandbox_id", "path"),
    # DELETE /volumes/{id}: which sandboxes mount it.
    Index(None, "volume_id"),
)

snapshots = Table(
    "snapshots",
    metadata,
    # A snapshot is a template (its id is the template's id, created from by that id).
    Column("id", String(64), ForeignKey("templates.id", ondelete="CASCADE"), primary_key=True),
    Column("team_id", String(64), ForeignKey("teams.id", ondelete="CASCADE"), nullable=False),
    # No foreign key: a snapshot outlives the sandbox it was taken from.
    Column("sandbox_id", String(64), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    # 0017: JSON of the source's ``network`` at the snapshot (the shape of
    # ``sandboxes.network``); a create from the snapshot gets it unless it sends its own.
    Column("network", Text, nullable=True),
    # GET /snapshots: WHERE team_id = ? ORDER BY created_at, id (keyset).
    Index(None, "team_id", "created_at", "id"),
    Index(None, "sandbox_id"),
)

#: Secrets every api process must share (e.g. the template upload-token key): made once by
#: whichever api needs one first, read by all (ADR 0024).
cluster_secrets = Table(
    "cluster_secrets",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", String(256), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)

#: SDK template builds as jobs (ADR 0024): any api answers their status and logs, and any
#: api with a build runner claims a started one (``FOR UPDATE SKIP LOCKED`` on PostgreSQL).
template_builds = Table(
    "template_builds",
    metadata,
    Column("id", String(64), primary_key=True),
    # No foreign key: a build's record outlives a deleted template (its status stays readable).
    Column("template_id", String(64), nullable=False),
    Column("team_id", String(64), ForeignKey("teams.id", ondelete="CASCADE"), nullable=False),
    # waiting (requested) → building (started; claimed when worker is set) → ready | error
    Column("status", String(16), nullable=False),
    Column("cpu_count", Integer, nullable=False),
    Column("memory_mb", Integer, nullable=False),
    # The first build of its template: a failure leaves the template "error", not "ready".
    Column("first", Boolean, nullable=False),
    Column("tags", Text, nullable=False),  # JSON list
    Column("start", Text, nullable=True),  # JSON: the start request, set when started
    Column("worker", String(128), nullable=True),
    Column("heartbeat_at", UTCDateTime(), nullable=True),
    Column("reason", Text, nullable=True),
    Column("reason_step", String(64), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime(), nullable=True),
    Index(None, "template_id", "team_id"),
    Index(None, "status", "created_at"),
)

#: A build's log lines, in the order written (``seq`` per build).
template_build_logs = Table(
    "template_build_logs",
    metadata,
    Column(
        "build_id",
        String(64),
        ForeignKey("template_builds.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("seq", Integer, nullable=False),
    Column("timestamp", UTCDateTime(), nullable=False),
    Column("level", String(16), nullable=False),
    Column("message", Text, nullable=False),
    Column("step", String(64), nullable=True),
    PrimaryKeyConstraint("build_id", "seq"),
)

nodes = Table(
    "nodes",
    metadata,
    # 0014 (membership, ADR 0025): one row per registered node; times from the store's clock.
    Column("id", String(64), primary_key=True),
    # How an api reaches the node API: ``http://host:port`` or ``unix:/path``.
    Column("address", String(512), nullable=False),
    Column("api_version", String(16), nullable=False),
    Column("version", String(64), nullable=False),
    Column("boot_id", String(64), nullable=False),
    # 0021: the node process's start (random per process); "" from an older node.
    Column("incarnation", String(64), nullable=False, server_default=""),
    Column("cpu_count", Integer, nullable=False),
    Column("memory_mb", Integer, nullable=False),
    Column("disk_mb", Integer, nullable=False),
    Column("max_sandboxes", Integer, nullable=False),
    # JSON object of the node's labels (nothing queries inside it).
    Column("labels", Text, nullable=False),
    # JSON list of the templates the node holds (placement prefers them).
    Column("templates", Text, nullable=False, server_default="[]"),
    # The last heartbeat's load of the host.
    Column("used_cpu_pct", Float, nullable=False, server_default="0"),
    Column("used_memory_mb", Integer, nullable=False, server_default="0"),
    Column("used_disk_mb", Integer, nullable=False, server_default="0"),
    # ready | draining | lost
    Column("status", String(16), nullable=False),
    Column("status_changed_at", UTCDateTime(), nullable=False),
    Column("lost_reason", Text, nullable=True),
    Column("registered_at", UTCDateTime(), nullable=False),
    Column("heartbeat_at", UTCDateTime(), nullable=False),
    Column("lease_expires_at", UTCDateTime(), nullable=False),
    Column("create_successes", BigInteger, nullable=False, server_default="0"),
    Column("create_fails", BigInteger, nullable=False, server_default="0"),
    # The lost-node sweeper: WHERE status != 'lost' AND lease_expires_at < now - grace.
    Index(None, "status", "lease_expires_at"),
)

artifact_holdings = Table(
    "artifact_holdings",
    metadata,
    # 0015 (ADR 0029): which node holds which node template (id, name@build, snapshot id).
    Column("artifact", String(160), nullable=False),
    Column("node_id", String(64), nullable=False),
    # held | deleting (deleted while the node did not answer: applied when it is back)
    Column("state", String(16), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("artifact", "node_id"),
    Index(None, "node_id"),
)

#: Template imports from OCI images as jobs (issue 11): queued by the api that took the
#: request, claimed by any api's import worker (``FOR UPDATE SKIP LOCKED``), progress and
#: outcome readable from every api; a claim is a lease (``lease_expires_at``) renewed by
#: the worker's heartbeat, taken over by another worker once it ends.
template_imports = Table(
    "template_imports",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("team_id", String(64), ForeignKey("teams.id", ondelete="CASCADE"), nullable=False),
    # The template it makes (id = alias = name once it is ready).
    Column("name", String(255), nullable=False),
    # queued → running (claimed: worker, lease) → ready | error
    Column("status", String(16), nullable=False),
    Column("request", Text, nullable=False),  # JSON: the ImageImport
    Column("worker", String(128), nullable=True),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("lease_expires_at", UTCDateTime(), nullable=True),
    Column("progress", Text, nullable=False, server_default="{}"),  # JSON: stage → [done, total]
    Column("result", Text, nullable=True),  # JSON: fingerprint, cacheHit, envd facts
    Column("error_status", Integer, nullable=True),
    Column("error_message", Text, nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime(), nullable=True),
    Index(None, "status", "created_at"),
    # One import of a name at a time, whoever asked (a second is 409 at once).
    Index(
        "uq_template_imports_active_name",
        "name",
        unique=True,
        sqlite_where=text("status IN ('queued', 'running')"),
        postgresql_where=text("status IN ('queued', 'running')"),
    ),
)

#: Team usage samples (issue 11): what ``GET /teams/{id}/metrics`` answers. The elected
#: leader writes one row per team every ``HUTCH_USAGE_INTERVAL_S`` and deletes rows older
#: than the retention (24 h); every api reads them. No foreign key to ``teams``: a sample of
#: a team deleted meanwhile must not fail the whole sample, and it ages out with the rest.
team_usage_samples = Table(
    "team_usage_samples",
    metadata,
    Column("team_id", String(64), nullable=False),
    Column("at", UTCDateTime(), nullable=False),
    Column("concurrent", Integer, nullable=False),
    Column("start_rate", Float, nullable=False),
    PrimaryKeyConstraint("team_id", "at"),
    Index(None, "at"),  # the prune
)

#: Every table, children before parents (the order to empty them in).
ALL_TABLES_CHILDREN_FIRST = (
    team_usage_samples,
    artifact_holdings,
    template_imports,
    template_build_logs,
    template_builds,
    cluster_secrets,
    nodes,
    sandbox_volume_mounts,
    snapshots,
    volumes,
    idempotency_keys,
    sandbox_metadata,
    sandboxes,
    templates,
    api_keys,
    teams,
)

#: 0020: the SDK's uploaded build archives (``COPY`` steps' files) of a cluster api, whose
#: builds run on a node chosen when they start (ADR 0030 addendum): kept here in chunks
#: when the upload ends, pushed to the building node over its ``PUT /v1/build-files``.
build_files = Table(
    "build_files",
    metadata,
    Column("files_hash", String(128), primary_key=True),
    Column("size", Integer, nullable=False),
    Column("chunks", Integer, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    # 0022: the last "present" answer, upload or push to a building node; the leader's
    # sweep deletes archives unused for the retention that no unfinished build names.
    Column("used_at", UTCDateTime(), nullable=False),
    Index(None, "used_at"),
)

build_file_chunks = Table(
    "build_file_chunks",
    metadata,
    Column("files_hash", String(128), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("data", LargeBinary, nullable=False),
    PrimaryKeyConstraint("files_hash", "seq"),
)
