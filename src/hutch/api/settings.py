"""``ApiSettings``: the control plane's configuration, read from the environment once.

Every field can be set as ``HUTCH_<FIELD>`` (``HUTCH_HOME``, ``HUTCH_DATABASE_URL``,
``HUTCH_API_PORT``, ...); ``main()`` builds one instance and passes it down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from hutch.api.models import TeamQuotas
from hutch.shared.paths import ENVD_VERSION


class ApiSettings(BaseSettings):
    """Configuration of the ``api`` role."""

    model_config = SettingsConfigDict(env_prefix="HUTCH_", frozen=True, extra="ignore")

    #: Where hutch keeps its state (the SQLite database by default).
    home: Path = Path("/var/lib/hutch")
    #: ``sqlite+aiosqlite:///...`` or ``postgresql+asyncpg://...``; default: SQLite in home.
    database_url: str | None = None
    #: Migrate the database on start (the embedded default); scale-out migrates once.
    migrate: bool = True
    api_host: str = "0.0.0.0"
    api_port: int = Field(default=3000, ge=0, le=65535)
    proxy_port: int = Field(default=49983, ge=0, le=65535)
    #: The ``domain`` returned at create (``<port>-<id>.<domain>`` hosts); None: not set.
    domain: str | None = None
    default_timeout_v2_s: int = Field(default=300, ge=1, le=86_400)
    default_timeout_v1_s: int = Field(default=15, ge=1, le=86_400)
    #: Sandboxes one node may hold before creates get 429; 0: no limit at the API.
    max_sandboxes_per_node: int = Field(default=100, ge=0)
    reaper_interval_s: float = Field(default=1.0, gt=0)
    #: A row still ``creating`` this long after its insert is a create whose api died
    #: mid-way: the reaper kills it (above the node call's 300 s timeout).
    create_stale_after_s: float = Field(default=600.0, gt=0)
    #: The key of template upload URLs (hex or any text); unset: made once, kept in the store.
    template_upload_secret: str | None = Field(default=None, repr=False)
    #: How long an operation waits for a sandbox another one holds before a 503 (ADR 0024).
    sandbox_lock_wait_s: float = Field(default=60.0, gt=0)
    #: How often a build worker looks for started template builds without a wake-up.
    build_poll_interval_s: float = Field(default=1.0, gt=0)
    #: A claimed build whose worker has not heartbeaten for this long is failed (ADR 0024).
    build_orphan_after_s: float = Field(default=30.0, gt=0)
    #: A claimed image import whose worker has not renewed it for this long is taken over
    #: by another api's worker (ADR 0030).
    import_lease_s: float = Field(default=30.0, gt=0)
    #: How often a PostgreSQL api campaigns for leadership, or checks it still leads.
    leader_interval_s: float = Field(default=2.0, gt=0)
    #: Requests per second each API key may make (token bucket, per api process); 0: off.
    rate_limit_per_s: float = Field(default=0, ge=0, le=1_000_000)
    #: The bucket's size: requests a key may make at once; 0: the rate (at least 1).
    rate_limit_burst: int = Field(default=0, ge=0, le=1_000_000)
    #: How often team usage is sampled for ``GET /teams/{id}/metrics`` (E2B's step: 5 s).
    usage_interval_s: float = Field(default=5.0, gt=0)
    #: The SDK's uploaded build archives (``build_files``) unused for this long that no
    #: unfinished build names are deleted by the elected leader (ADR 0037). At least an
    #: hour: an SDK told "present" must still find the archive when its build starts.
    build_files_retention_s: float = Field(default=7 * 86_400.0, ge=3600)
    #: How often the leader sweeps them.
    build_files_sweep_interval_s: float = Field(default=600.0, gt=0)
    #: Each team's quotas unless an admin sets its own (ADR 0015); 0: no limit.
    team_max_running_sandboxes: int = Field(default=0, ge=0)
    team_max_vcpus: int = Field(default=0, ge=0)
    team_max_memory_mb: int = Field(default=0, ge=0)
    team_max_timeout_s: int = Field(default=0, ge=0)
    team_max_volume_bytes: int = Field(default=0, ge=0)
    team_max_paused_sandboxes: int = Field(default=0, ge=0)
    team_max_concurrent_builds: int = Field(default=0, ge=0)
    envd_version: str = ENVD_VERSION
    #: Where new volumes' data goes (docs/volumes.md).
    volume_backend: Literal["local", "s3"] = "local"
    #: The local backend's images and mounts; default ``<home>/volumes``.
    volumes_dir: Path | None = None
    #: The quota of a volume created without ``sizeMB`` (the SDK never sends one).
    volume_default_size_mb: int = Field(default=1024, ge=1)
    #: How long a volume content token is valid.
    volume_token_ttl_s: int = Field(default=7 * 86_400, ge=1)
    #: Free host disk the local backend never hands to new volumes.
    volume_reserve_mb: int = Field(default=1024, ge=0)
    #: The S3 backend (ADR 0009): enabled when a bucket is set. Credentials come from
    #: boto3's usual chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, profiles, ...).
    volume_s3_bucket: str | None = None
    volume_s3_endpoint_url: str | None = None
    volume_s3_region: str = "us-east-1"
    volume_s3_prefix: str = "volumes/"
    #: The largest quota of one S3 volume (the store itself has no limit).
    volume_s3_max_size_mb: int = Field(default=1 << 20, ge=1)
    #: Roles as processes (docs/deploy.md): the token nodes require and edges wake
    #: sandboxes with (``HUTCH_CLUSTER_TOKEN``, or the first line of
    #: ``HUTCH_CLUSTER_TOKEN_FILE``); None: ``hutch serve``, where nothing outside calls.
    cluster_token: SecretStr | None = None
    cluster_token_file: Path | None = None

    def effective_cluster_token(self) -> str | None:
        """``cluster_token``, else the token file's first line, else None (empty: refused)."""
        if self.cluster_token is not None:
            token = self.cluster_token.get_secret_value().strip()
        elif self.cluster_token_file is not None:
            token = self.cluster_token_file.read_text().strip()
        else:
            return None
        if not token:
            raise ValueError("the cluster token is empty")
        return token

    # ---- cluster membership (ADR 0025, docs/node-api.md "Membership") ----------------------
    # The cluster token above is also what nodes send to register and beat
    # (``/hutch/cluster``); without one the cluster routes answer 503.
    #: A node's lease: it must beat within this long (it beats every third of it).
    cluster_lease_s: float = Field(default=15.0, gt=0, le=3600)
    #: After its lease ended, how long a silent node keeps its sandboxes before they are
    #: reported killed and it is marked ``lost``.
    cluster_lost_grace_s: float = Field(default=30.0, ge=0, le=86_400)
    #: How often each api looks for nodes past lease and grace.
    cluster_sweep_interval_s: float = Field(default=2.0, gt=0)

    #: Placement (ADR 0025): sandbox vCPUs per host CPU and sandbox memory limits per MiB
    #: of host memory that a node is filled up to.
    placement_cpu_overcommit: float = Field(default=16.0, gt=0)
    placement_memory_overcommit: float = Field(default=4.0, gt=0)

    def team_quota_defaults(self) -> TeamQuotas:
        """The ``team_max_*`` settings as :class:`TeamQuotas`."""
        return TeamQuotas(
            max_running_sandboxes=self.team_max_running_sandboxes,
            max_vcpus=self.team_max_vcpus,
            max_memory_mb=self.team_max_memory_mb,
            max_timeout_s=self.team_max_timeout_s,
            max_volume_bytes=self.team_max_volume_bytes,
            max_paused_sandboxes=self.team_max_paused_sandboxes,
            max_concurrent_builds=self.team_max_concurrent_builds,
        )

    def effective_volumes_dir(self) -> Path:
        """``volumes_dir``, or ``<home>/volumes``."""
        return (self.volumes_dir or self.home / "volumes").resolve()

    def effective_database_url(self) -> str:
        """``database_url``, or SQLite at ``<home>/hutch.db``."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.home.resolve() / 'hutch.db'}"
