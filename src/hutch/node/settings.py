"""``NodeSettings``: the node's configuration, read once from ``HUTCH_NODE_*`` variables.

Parsed once in the composition root (``node/app.py``) and passed down; nothing else in the
node reads the environment.
"""

from __future__ import annotations

import socket
from ipaddress import IPv4Network
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class NodeSettings(BaseSettings):
    """Where the node keeps its state and how it lays out sandboxes on the host.

    Every global name (bridge, netns and veth prefixes, nft table, cgroup parent) must be
    unique per node on one host: a second instance (tests, benchmarks) changes all of them.
    """

    model_config = SettingsConfigDict(env_prefix="HUTCH_NODE_", frozen=True, extra="forbid")

    #: Templates, sandbox directories, runc state and the envd bundle live below this.
    home: Path = Path("/var/lib/hutch")
    runtime: Literal["runc", "runsc"] = "runc"
    #: runsc's ``--platform`` (``systrap`` needs bookworm-backports' runsc).
    runsc_platform: str = "ptrace"
    bridge: str = "hutch0"
    subnet: IPv4Network = IPv4Network("10.11.0.0/16")
    netns_prefix: str = "hutch-"
    veth_prefix: str = "hutch"
    nft_table: str = "hutch"
    #: Leave ``net.ipv4.ip_forward`` alone (tests); production sets it for NAT.
    manage_ip_forward: bool = True
    #: Absolute (from each hierarchy's root) or relative to the node's own cgroup.
    cgroup_parent: str = "/hutch"
    max_sandboxes: int = Field(default=100, ge=1)
    #: How long a new sandbox's envd may take to answer ``/health``.
    envd_ready_timeout_s: float = Field(default=30.0, gt=0)
    #: Written into each sandbox's /etc/resolv.conf: the host's own resolver is unreachable
    #: from sandboxes (the firewall refuses input from the bridge), so these go through NAT.
    dns_servers: tuple[str, ...] = ("1.1.1.1", "8.8.8.8")
    #: The egress filter (ADR 0022): its port on the bridge's gateway address, and the
    #: resolver it asks for the addresses of allowed domains (``ip`` or ``ip:port``;
    #: empty: the host's own resolver).
    egress_filter_port: int = Field(default=3129, ge=1, le=65535)
    egress_resolver: str = ""
    #: At most this many concurrent connections per sandbox (nft ``ct count``); 0: no cap.
    max_connections_per_sandbox: int = Field(default=1024, ge=0)
    #: The static tini every sandbox runs as PID 1 (Debian package ``tini``).
    tini_path: Path = Path("/usr/bin/tini-static")
    #: envd's bundle; default ``<home>/envd``. Built there on first start when missing.
    envd_bundle_dir: Path | None = None
    #: Fork each runc sandbox's envd from one pre-imported envd per node (the zygote, ADR
    #: 0032 addendum step 2) instead of exec'ing it: faster to ready, less memory per
    #: sandbox (ADR 0039: on by default). runsc always execs; off: every sandbox execs envd.
    envd_zygote: bool = True
    pids_limit: int = Field(default=1024, ge=16)
    #: Every sandbox's writable layer is an ext4 disk of its own (ADR 0023): this size
    #: (MiB) when neither the create nor the template names one; allocated in full on the
    #: node's disk at create.
    default_disk_mb: int = Field(default=1024, ge=16)
    #: The largest disk a create or a template may ask for (MiB); above it: 400.
    max_disk_mb: int = Field(default=10240, ge=16)
    #: The SDK's uploaded build archives on this node (``template-files/``, pushed by the
    #: api or uploaded through ``hutch serve``) unused for this long and named by no build
    #: running here are deleted (ADR 0037), checked when archives arrive or a build starts.
    #: At least an hour: an SDK told "present" must still find it when its build starts.
    build_files_retention_s: float = Field(default=7 * 86_400.0, ge=3600)
    #: The host's lxcfs mount (Debian's service mounts it here on a systemd host; the node
    #: starts one there when none runs). runc sandboxes get its /proc views of their own
    #: limits (``node/lxcfs.py``). Empty: off.
    lxcfs_dir: Path | None = Path("/var/lib/lxcfs")
    #: Resource samples of running sandboxes (``GET /sandboxes/{id}/metrics``): how often,
    #: and how many are kept per sandbox (720 x 5 s: the last hour).
    metrics_interval_s: float = Field(default=5.0, gt=0)
    metrics_keep: int = Field(default=720, ge=1)
    #: A running sandbox's ``envd.log`` (its envd's output, on the node's disk beside the
    #: sandbox's own) is trimmed to its last half once past this, checked at each metrics
    #: tick (``records.bound_log``); the logs route reads its last 4 MiB.
    envd_log_max_bytes: int = Field(default=16 * 1024 * 1024, ge=64 * 1024)
    #: Warm pool members per template, ``<template>=<count>`` comma-separated (ADR 0011):
    #: sandboxes booted ahead of demand that a matching create takes in tens of ms. Two of
    #: ``base`` (what ``Sandbox.create()`` asks for) cost ~55 MiB idle, two of
    #: ``code-interpreter-v1`` (what the code interpreter SDK's asks for; server and Python
    #: kernel running) ~195 MiB; a template not built here is skipped; other templates
    #: get none unless named. Ignored under runsc (the hostname cannot be changed there).
    pool_size: str = "base=2,code-interpreter-v1=2"
    #: Demand sizing (ADR 0038; docs/serve.md "Warm pool"): above those floors, each
    #: template (and CPU/memory/disk combination) gets as many members as it had creates
    #: at once or within one second lately, at most this many (0: the floors only). Needs
    #: a pool: ``pool_size`` empty turns the pool off altogether.
    pool_max_per_template: int = Field(default=10, ge=0, le=1000)
    #: The most memory (MiB, the members' memory limits summed) demand may fill with
    #: members on this node; 0: the node's memory (``capacity_memory_mb``, else the
    #: host's): limits, not use (an idle ``base`` member has a 1024 MiB limit and uses
    #: ~27 MiB), a quarter of what placement allocates at its default 4x memory
    #: overcommit. The floors count against it and are kept even above it.
    pool_memory_mb: int = Field(default=0, ge=0)
    #: The recent creates demand looks at (s): a template nobody created for this long
    #: drains back to its floor.
    pool_window_s: float = Field(default=120.0, gt=0)
    #: Creates of one key started within this span count as one burst (s).
    pool_burst_s: float = Field(default=1.0, gt=0)
    #: The cgroup CPU weight (cgroup v2's scale, 1..10000; the kernel's default 100) a
    #: member boots with, so its envd's start yields to live sandboxes while cores are
    #: short; raised to 100 when a create takes it.
    pool_cpu_weight: int = Field(default=1, ge=1, le=10000)
    #: Templates another home published that this node offers read-only beside its own
    #: (docs/templates.md, "Shared templates"): by default the install's, where
    #: ``install.sh`` builds ``busybox`` and ``base``, so a second instance on a fresh home
    #: has them with no copy (they are overlay lower layers). Never written, never pruned;
    #: a template of the same name under this home's own directory shadows it. Empty: none.
    shared_templates_dir: Path | None = Path("/var/lib/hutch/templates")
    #: The shared artifact directory (ADR 0029 addendum; docs/deploy.md "How artifacts
    #: move"): one every node of the cluster mounts (NFS, say). The node writes there
    #: every template it imports, builds, snapshots or fetches (manifests, and parts as
    #: tars named by their SHA-256), and a template it lacks is read from there before the
    #: peers are asked, so a snapshot outlives the node that took it. Empty: none (only peers).
    artifact_dir: Path | None = None
    #: The S3 artifact store instead (ADR 0029 amendment; docs/deploy.md "How artifacts
    #: move"): a bucket of an S3-compatible store every node reaches, for hosts that share
    #: no directory; the same layout under ``artifact_s3_prefix``. Credentials come from
    #: boto3's chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, a
    #: role); the node refuses to start when it finds none or the bucket does not exist.
    #: Empty: none. Exclusive with ``artifact_dir``.
    artifact_s3_bucket: str | None = None
    #: The S3-compatible server (``http://minio:9000``); empty: AWS itself.
    artifact_s3_endpoint_url: str | None = None
    artifact_s3_region: str = "us-east-1"
    #: Put before every key; empty or ending in ``/``.
    artifact_s3_prefix: str = "artifacts/"
    #: Bytes per multipart upload part (MiB; S3's least is 5) and parts in flight per
    #: upload: a publish holds about their product in memory.
    artifact_s3_part_mb: int = Field(default=16, ge=5, le=5120)
    artifact_s3_concurrency: int = Field(default=4, ge=1, le=32)

    # ---- the node API (``hutch node``; docs/node-api.md) ------------------------------------
    #: The node's stable id, answered in ``GET /v1/node`` and recorded on sandbox rows.
    node_id: str = Field(default_factory=socket.gethostname, min_length=1, max_length=63)
    #: The cluster token every node API request must carry (``Authorization: Bearer``).
    api_token: SecretStr | None = None
    #: A file holding the token instead (default ``<home>/node-api.token`` when present).
    api_token_file: Path | None = None
    #: Where a standalone node's local volume backend keeps its images (``<home>/volumes``).
    volumes_dir: Path | None = None

    # ---- membership (ADR 0025; docs/node-api.md "Membership") -------------------------------
    #: The apis to register with, comma-separated (any one will do; the next is tried when
    #: one stops answering). Empty: the node does not register (an api that knows it some
    #: other way, or none).
    cluster_api_urls: str = ""
    #: How the apis reach this node's API; default ``http://<listen>`` or ``unix:<socket>``.
    advertise_address: str | None = None
    #: ``key=value`` pairs, comma-separated, shown in ``GET /nodes``.
    labels: str = ""
    #: The boot id the node registers with; default the kernel's (new after a host reboot).
    boot_id: str | None = None
    #: Capacity offered to sandboxes; 0: measured (CPUs, memory, the home's disk).
    capacity_cpu_count: int = Field(default=0, ge=0)
    capacity_memory_mb: int = Field(default=0, ge=0)
    capacity_disk_mb: int = Field(default=0, ge=0)

    @property
    def cluster_api_url_list(self) -> list[str]:
        """``cluster_api_urls`` split."""
        return [u.strip() for u in self.cluster_api_urls.split(",") if u.strip()]

    @property
    def label_map(self) -> dict[str, str]:
        """``labels`` parsed (``ValueError`` for an entry that is not ``k=v``)."""
        labels: dict[str, str] = {}
        for part in self.labels.split(","):
            if not part.strip():
                continue
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"label {part!r}: want key=value")
            labels[key.strip()] = value.strip()
        return labels

    @field_validator(
        "shared_templates_dir", "lxcfs_dir", "artifact_dir", "artifact_s3_bucket",
        "artifact_s3_endpoint_url", mode="before",
    )  # fmt: skip
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _check(self) -> NodeSettings:
        if not self.home.is_absolute():
            raise ValueError(f"home must be an absolute path: {self.home}")
        if self.shared_templates_dir is not None and not self.shared_templates_dir.is_absolute():
            raise ValueError(f"shared_templates_dir must be absolute: {self.shared_templates_dir}")
        if not self.tini_path.is_absolute():
            raise ValueError(f"tini_path must be absolute: {self.tini_path}")
        parse_pool_sizes(self.pool_size)
        if self.default_disk_mb > self.max_disk_mb:
            raise ValueError(
                f"default_disk_mb {self.default_disk_mb} is above max_disk_mb {self.max_disk_mb}"
            )
        _ = self.label_map
        self._check_artifact_store()
        return self

    def _check_artifact_store(self) -> None:
        if self.artifact_s3_bucket is None:
            if self.artifact_s3_endpoint_url is not None:
                raise ValueError(
                    "HUTCH_NODE_ARTIFACT_S3_ENDPOINT_URL is set but HUTCH_NODE_ARTIFACT_S3_BUCKET"
                    " is not: the S3 artifact store needs a bucket"
                )
            return
        if self.artifact_dir is not None:
            raise ValueError(
                "HUTCH_NODE_ARTIFACT_DIR and HUTCH_NODE_ARTIFACT_S3_BUCKET are both set: "
                "a node has one artifact store, choose one"
            )
        prefix = self.artifact_s3_prefix
        if prefix and (not prefix.endswith("/") or prefix.startswith("/") or "//" in prefix):
            raise ValueError(
                f"HUTCH_NODE_ARTIFACT_S3_PREFIX {prefix!r}: want empty or a key prefix "
                "ending in '/' (artifacts/)"
            )

    def effective_api_token(self) -> str | None:
        """``api_token``, else the token file's first line (``<home>/node-api.token`` by
        default), else None. An empty token is refused: it would let anyone in."""
        if self.api_token is not None:
            token = self.api_token.get_secret_value().strip()
        else:
            path = self.api_token_file or self.home / "node-api.token"
            try:
                token = path.read_text().strip()
            except FileNotFoundError:
                if self.api_token_file is not None:
                    raise ValueError(f"api_token_file {path} does not exist") from None
                return None
        if not token:
            raise ValueError("the node API token is empty")
        return token

    @property
    def pool_sizes(self) -> dict[str, int]:
        """``pool_size`` parsed; empty under runsc (ADR 0011)."""
        return {} if self.runtime == "runsc" else parse_pool_sizes(self.pool_size)

    def pool_memory_budget_mb(self, host_memory_mb: int) -> int:
        """``pool_memory_mb``, else ``capacity_memory_mb``, else ``host_memory_mb``."""
        return self.pool_memory_mb or self.capacity_memory_mb or host_memory_mb

    @property
    def templates_dir(self) -> Path:
        """``<home>/templates``: one directory per template."""
        return self.home / "templates"

    @property
    def shared_templates_dirs(self) -> tuple[Path, ...]:
        """``shared_templates_dir`` unless unset or this home's own (the install's home)."""
        shared = self.shared_templates_dir
        if shared is None or shared.resolve() == self.templates_dir.resolve():
            return ()
        return (shared,)

    @property
    def sandboxes_dir(self) -> Path:
        """``<home>/sandboxes``: one directory (= OCI bundle) per sandbox."""
        return self.home / "sandboxes"

    @property
    def runtime_root(self) -> Path:
        """The OCI runtime's private ``--root`` state directory."""
        return self.home / "runtime" / self.runtime

    @property
    def envd_bundle_path(self) -> Path:
        """Where envd's bundle is (or will be built)."""
        return self.envd_bundle_dir or self.home / "envd"


def parse_pool_sizes(text: str) -> dict[str, int]:
    """``"base=2,busybox=1"`` → ``{"base": 2, "busybox": 1}``; empty text → ``{}``.

    Raises:
        ValueError: an entry is not ``name=count`` with a count of 0 or more.
    """
    sizes: dict[str, int] = {}
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        name, sep, count = part.partition("=")
        if not sep or not name or not count.isdigit():
            raise ValueError(f"pool size entry {part!r}: want <template>=<count>")
        sizes[name] = int(count)
    return sizes
