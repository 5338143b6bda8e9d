"""The node's composition root: build a :class:`SandboxManager` from ``NodeSettings``.

The only place where the sandbox domain meets its real adapters (runc or runsc, Linux
networking, overlayfs, templates on disk, envd over HTTP).
"""

from __future__ import annotations

import logging
import resource
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from hutch.node import metrics
from hutch.node.adapters import HostUsageProbe, HttpEnvdClient, OverlayRootfs
from hutch.node.egress.proxy import EgressFilter, FilterConfig
from hutch.node.egress.resolver import Resolver
from hutch.node.envd_bundle import build_envd_bundle
from hutch.node.network.base import NetworkSettings
from hutch.node.network.linux import LinuxSandboxNetworks
from hutch.node.runtime.runc import RuncRuntime
from hutch.node.runtime.runsc import RunscRuntime
from hutch.node.sandbox.envd_fork import EnvdZygote, static_elf
from hutch.node.sandbox.manager import SandboxManager
from hutch.node.sandbox.models import ManagerConfig, RunningSandbox
from hutch.node.sandbox.records import ENVD_LOG, bound_log
from hutch.node.sandbox.sampler import UsageSampler
from hutch.node.service import NodeIdentity, NodeService
from hutch.node.settings import NodeSettings
from hutch.node.templates.artifact import DirTemplateStore
from hutch.node.templates.artifact_dir import DirBlobs
from hutch.node.templates.artifact_s3 import MIB, S3Blobs
from hutch.node.templates.artifact_store import Blobs, ContentStore
from hutch.node.templates.manager import TemplateManager
from hutch.node.templates.transfer import Exporter, Fetcher
from hutch.shared.egress import EgressPolicy
from hutch.shared.errors import NotFoundError
from hutch.volumes.base import VolumeBackend

log = logging.getLogger("hutch.node")

#: install.sh's ``busybox-static``: the waiter of a sandbox whose envd is forked (ADR 0039).
_STATIC_BUSYBOX = Path("/bin/busybox")


@dataclass(frozen=True, slots=True)
class Node:
    """A built node: its manager and the pieces the caller may close or inspect."""

    manager: SandboxManager
    envd: HttpEnvdClient
    networks: LinuxSandboxNetworks
    templates: DirTemplateStore
    #: Resource samples of the running sandboxes; the caller ``start()``s it.
    sampler: UsageSampler
    #: Domain rules' filter; the caller ``start()``s it after ``manager.start()``.
    egress: EgressFilter

    async def aclose(self) -> None:
        """Release the node's own resources (sandboxes keep running)."""
        await self.egress.aclose()
        await self.sampler.aclose()
        await self.manager.aclose()
        await self.envd.aclose()


def network_settings(settings: NodeSettings) -> NetworkSettings:
    """The network adapter's settings from the node's."""
    return NetworkSettings(
        bridge=settings.bridge,
        subnet=settings.subnet,
        netns_prefix=settings.netns_prefix,
        veth_prefix=settings.veth_prefix,
        table=settings.nft_table,
        manage_ip_forward=settings.manage_ip_forward,
        egress_filter_port=settings.egress_filter_port,
        max_connections=settings.max_connections_per_sandbox,
        dns_servers=settings.dns_servers,
    )


def build_node(settings: NodeSettings, *, build_bundle: bool = True) -> Node:
    """Wire a node; build envd's bundle first when it is missing and ``build_bundle``.

    Call ``await node.manager.start()`` and then ``reconcile`` with the store's ids.
    """
    if not settings.tini_path.is_file():
        raise NotFoundError(f"{settings.tini_path} is missing (apt-get install tini)")
    bundle = settings.envd_bundle_path
    if not (bundle / "SHA256").is_file():
        if not build_bundle:
            raise NotFoundError(f"envd bundle missing at {bundle}")
        log.info("building envd's bundle into %s (first start; seconds)", bundle)
        build_envd_bundle(bundle)
    runtime = (
        RunscRuntime(root=settings.runtime_root, platform=settings.runsc_platform)
        if settings.runtime == "runsc"
        else RuncRuntime(root=settings.runtime_root)
    )
    networks = LinuxSandboxNetworks(network_settings(settings))
    # Timed at the adapter seams (node/metrics.py): runtime calls and network setup.
    timed_runtime: Any = metrics.TimedAdapter(
        runtime,
        histogram=metrics.RUNTIME_SECONDS,
        calls=metrics.TIMED_RUNTIME_CALLS,
        span_prefix="runtime",
    )
    timed_networks: Any = metrics.TimedAdapter(
        networks,
        histogram=metrics.NETWORK_SECONDS,
        calls=metrics.TIMED_NETWORK_CALLS,
        span_prefix="network",
    )
    templates = DirTemplateStore(settings.templates_dir, shared=settings.shared_templates_dirs)
    envd = HttpEnvdClient()
    config = ManagerConfig(
        sandboxes_dir=settings.sandboxes_dir,
        envd_bundle_dir=bundle,
        tini_path=settings.tini_path,
        cgroup_parent=settings.cgroup_parent,
        max_sandboxes=settings.max_sandboxes,
        ready_timeout_s=settings.envd_ready_timeout_s,
        dns_servers=settings.dns_servers,
        pids_limit=settings.pids_limit,
        default_disk_mb=settings.default_disk_mb,
        max_disk_mb=settings.max_disk_mb,
        # gVisor shows its own /proc (its sentry's view of the sandbox's limits).
        lxcfs_dir=settings.lxcfs_dir if settings.runtime == "runc" else None,
        max_nofile=resource.getrlimit(resource.RLIMIT_NOFILE)[1],
        pool_sizes=settings.pool_sizes,
        pool_max_per_template=settings.pool_max_per_template,
        pool_memory_mb=settings.pool_memory_budget_mb(_host_memory_mb()),
        pool_window_s=settings.pool_window_s,
        pool_burst_s=settings.pool_burst_s,
        pool_cpu_weight=settings.pool_cpu_weight,
        templates_dir=settings.templates_dir,
        busybox_path=_STATIC_BUSYBOX if static_elf(_STATIC_BUSYBOX) else None,
    )
    # envd forked from one pre-imported zygote per node (ADR 0032 addendum, step 2); runsc
    # keeps exec: gVisor's Sentry is the sandbox's kernel, a host setns does not enter it.
    zygote = (
        EnvdZygote(bundle_dir=bundle, log_path=settings.home / "run" / "envd-zygote.log")
        if settings.envd_zygote and settings.runtime == "runc"
        else None
    )
    manager = SandboxManager(
        config=config, runtime=timed_runtime, networks=timed_networks, rootfs=OverlayRootfs(),
        templates=templates, envd=envd, zygote=zygote,
    )  # fmt: skip

    def bound_envd_log(sandbox: RunningSandbox) -> None:
        dropped = bound_log(sandbox.sandbox_dir / ENVD_LOG, max_bytes=settings.envd_log_max_bytes)
        if dropped:
            log.info("sandbox %s: %d bytes of envd.log dropped", sandbox.sandbox_id, dropped)

    sampler = UsageSampler(
        sandboxes=manager.list, probe=HostUsageProbe(),
        interval_s=settings.metrics_interval_s, keep=settings.metrics_keep,
        per_sandbox=bound_envd_log,
    )  # fmt: skip
    net = networks.settings

    def policy_of(address: IPv4Address) -> EgressPolicy | None:
        sandbox = manager.by_address(address)
        return sandbox.egress if sandbox is not None else None

    egress = EgressFilter(
        FilterConfig(
            listen=net.gateway, port=net.egress_filter_port,
            refused=(*net.denied_egress, net.subnet),
        ),
        policies=policy_of, resolver=Resolver(settings.egress_resolver),
    )  # fmt: skip
    return Node(
        manager=manager, envd=envd, networks=networks, templates=templates, sampler=sampler,
        egress=egress,
    )  # fmt: skip


def _host_memory_mb() -> int:
    """The host's memory (MiB) from ``/proc/meminfo`` (the pool's default budget)."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return 0


def build_artifact_blobs(settings: NodeSettings, *, check: bool = True) -> Blobs | None:
    """The artifact store's adapter the settings name (ADR 0029 addendum and amendment):
    the shared directory, the S3 bucket, or None. ``check``: refuse an S3 store that cannot
    work now (``ArtifactStoreConfigError`` naming why), before the node starts anything."""
    if settings.artifact_dir is not None:
        return DirBlobs(settings.artifact_dir)
    if settings.artifact_s3_bucket is None:
        return None
    blobs = S3Blobs(
        bucket=settings.artifact_s3_bucket, prefix=settings.artifact_s3_prefix,
        endpoint_url=settings.artifact_s3_endpoint_url, region=settings.artifact_s3_region,
        part_size=settings.artifact_s3_part_mb * MIB,
        concurrency=settings.artifact_s3_concurrency,
    )  # fmt: skip
    if check:
        blobs.check()
    return blobs


def build_node_service(
    node: Node,
    settings: NodeSettings,
    *,
    node_id: str,
    volumes: Mapping[str, VolumeBackend] | None = None,
    artifact_blobs: Blobs | None = None,
) -> NodeService:
    """What the node API serves (``node/http/``): the built node's parts behind one facade.

    ``volumes``: the backends whose volumes sandboxes mount (``hutch serve`` shares its
    api's, so one backend instance owns each host mount); ``artifact_blobs``: the artifact
    store's adapter, checked at start (default: :func:`build_artifact_blobs` unchecked).
    """
    from hutch import __version__

    exporter = Exporter(node.templates, settings.templates_dir)
    blobs = artifact_blobs or build_artifact_blobs(settings, check=False)
    artifact_store = None if blobs is None else ContentStore(blobs, exporter)
    templates = TemplateManager(
        templates_dir=settings.templates_dir,
        envd_bundle=settings.envd_bundle_path,
        sandboxes=node.manager,
        shared_templates=settings.shared_templates_dirs,
        max_disk_mb=settings.max_disk_mb,
        artifact_store=artifact_store,
        files_retention_s=settings.build_files_retention_s,
    )
    identity = NodeIdentity(
        node_id=node_id, version=__version__, runtime=settings.runtime,
        max_sandboxes=settings.max_sandboxes, pool_sizes=settings.pool_sizes,
    )  # fmt: skip
    fetcher = Fetcher(
        node.templates, settings.templates_dir, token=settings.effective_api_token(),
        artifact_store=artifact_store,
    )  # fmt: skip
    fetcher.clean_incoming()  # a crashed fetch's leftovers (never a part: ADR 0029)
    service = NodeService(
        identity=identity, sandboxes=node.manager, sampler=node.sampler, templates=templates,
        volumes=volumes, exporter=exporter,
        fetcher=fetcher,
    )  # fmt: skip

    def usage() -> Iterator[tuple[float, int, int]]:
        for sandbox in node.manager.list():
            sample = node.sampler.latest(sandbox.sandbox_id)
            if sample is not None:
                cores = sample.cpu_used_pct / 100 * sample.cpu_count
                yield cores, sample.mem_used, sample.disk_used

    metrics.register_collector(
        metrics.NodeCollector(
            load=service.load,
            usage=usage,
            disk_path=settings.sandboxes_dir,
            disk_allocated=lambda: sum(s.disk_mb for s in node.manager.list()) << 20,
        )
    )
    return service
