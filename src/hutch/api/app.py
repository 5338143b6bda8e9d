"""The composition root of the ``api`` role: ``create_app(settings, node=..., store=...)``.

Wires the store (opened in the lifespan, inside the server's event loop, unless one is
handed in), the services, the reaper loop and the routes. Routes match the decoded path;
that is safe because every path parameter is a sandbox id (``[a-z0-9]``, optionally
``-<clientID>``): an encoded ``/`` can never form a valid id, and such a path is a JSON 404.
No trailing-slash redirects: the SDK does not follow them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from hutch.api import metrics
from hutch.api.http import (
    routes_admin,
    routes_cluster,
    routes_edge,
    routes_health,
    routes_imports,
    routes_keys,
    routes_metadata,
    routes_nodes,
    routes_sandboxes,
    routes_snapshots,
    routes_status,
    routes_template_builds,
    routes_templates,
    routes_unsupported,
    routes_volumecontent,
    routes_volumes,
)
from hutch.api.http.auth import HttpContext
from hutch.api.http.errors import EXCEPTION_HANDLERS
from hutch.api.http.routes_cluster import ClusterContext
from hutch.api.models import Sandbox
from hutch.api.nodes.builds import ClusterBuilds
from hutch.api.nodes.registry import NodeRegistry
from hutch.api.nodes.router import ClusterTemplates, NodeRouter
from hutch.api.nodes.volumes import ClusterVolumeHosts
from hutch.api.nodes_model import Registered
from hutch.api.service.artifacts import ArtifactService
from hutch.api.service.build_files import BuildFileSweeper
from hutch.api.service.create_watch import LeaseWatch
from hutch.api.service.keys import KeyService
from hutch.api.service.leader import AlwaysLeader, Leadership, SingletonFactory
from hutch.api.service.leases import LostNodeSweeper
from hutch.api.service.locks import SandboxLockFamily, SandboxLocks
from hutch.api.service.membership import (
    MembershipPolicy,
    MembershipService,
    ReconcileOutcome,
)
from hutch.api.service.metadata import MetadataService
from hutch.api.service.network import NetworkService
from hutch.api.service.node_status import NodeStatusSource
from hutch.api.service.pausing import PauseService
from hutch.api.service.placement import PlacementPolicy
from hutch.api.service.ports import BuildRunner, NodeClient, SandboxRoutes, TemplateBuilder
from hutch.api.service.quotas import QuotaService
from hutch.api.service.ratelimit import RateLimiter
from hutch.api.service.reaper import Reaper
from hutch.api.service.reconcile import registration_reconciler
from hutch.api.service.routing import NoRoutes, RoutedNodeClient
from hutch.api.service.sandboxes import SandboxPolicy, SandboxService
from hutch.api.service.snapshots import SnapshotService
from hutch.api.service.teams import TeamCleanup, TeamService
from hutch.api.service.template_builds import (
    UPLOAD_SECRET_NAME,
    BuildJobs,
    TemplateBuildService,
    UploadTokens,
)
from hutch.api.service.template_imports import ImportJobs, ImportPolicy, TemplateImportService
from hutch.api.service.template_tags import TemplateTagService
from hutch.api.service.templates import TemplateService
from hutch.api.service.usage import UsageSampler
from hutch.api.service.volumes import VolumeHosts, VolumePolicy, VolumeService
from hutch.api.settings import ApiSettings
from hutch.api.store.base import (
    ApiKeyStore,
    Clock,
    SandboxStore,
    SecretStore,
    SnapshotStore,
    TeamStore,
    TemplateStore,
    UsageSampleStore,
    VolumeStore,
    utc_now,
)
from hutch.api.store.nodes import SqlNodeStore
from hutch.shared.errors import NotFoundError, UnavailableError
from hutch.shared.ids import NodeID, SandboxID, TeamID
from hutch.shared.observe import Observe
from hutch.shared.paths import CLI_KEY_FILE
from hutch.volumes.base import VolumeBackend


class ApiStore(Protocol):
    """Every store the API uses (``SqlStore`` satisfies it)."""

    @property
    def teams(self) -> TeamStore: ...
    @property
    def keys(self) -> ApiKeyStore: ...
    @property
    def templates(self) -> TemplateStore: ...
    @property
    def sandboxes(self) -> SandboxStore: ...
    @property
    def volumes(self) -> VolumeStore: ...
    @property
    def snapshots(self) -> SnapshotStore: ...
    @property
    def secrets(self) -> SecretStore: ...
    @property
    def builds(self) -> BuildJobs: ...
    @property
    def nodes(self) -> SqlNodeStore: ...
    @property
    def imports(self) -> ImportJobs: ...
    @property
    def usage(self) -> UsageSampleStore: ...


def build_volume_backends(settings: ApiSettings, *, local: bool = True) -> dict[str, VolumeBackend]:
    """The volume backends ``settings`` configure, by name; ``local`` False: not the local
    one (an api with membership reaches each node's over the node API, ADR 0034)."""
    from hutch.volumes.local import LocalVolumeBackend

    backends: dict[str, VolumeBackend] = {}
    if local:
        made = LocalVolumeBackend(
            settings.effective_volumes_dir(), reserve_bytes=settings.volume_reserve_mb << 20
        )
        backends[made.name] = made
    if settings.volume_s3_bucket:
        from hutch.volumes.s3 import S3VolumeBackend

        s3 = S3VolumeBackend(
            bucket=settings.volume_s3_bucket,
            endpoint_url=settings.volume_s3_endpoint_url,
            region=settings.volume_s3_region,
            prefix=settings.volume_s3_prefix,
            max_size_bytes=settings.volume_s3_max_size_mb << 20,
        )
        backends[s3.name] = s3
    return backends


@dataclass(frozen=True, slots=True)
class Cluster:
    """What :func:`build_cluster` makes: the routes' context, the registry of node clients,
    and the ``NodeClient`` that sends each call to its sandbox's node."""

    context: ClusterContext
    registry: NodeRegistry
    node: NodeClient
    #: Which node holds which template (ADR 0029); None over a store without holdings.
    artifacts: ArtifactService | None = None
    #: Template deletes on every holder (``TemplateBuilder`` for an api with no builder).
    templates: ClusterTemplates | None = None
    #: SDK builds placed on a node (``BuildRunner`` for an api with no runner); None over a
    #: store that keeps no build archives.
    builds: ClusterBuilds | None = None
    #: Where local volumes live: a node each, over the node API (ADR 0034).
    volumes: ClusterVolumeHosts | None = None


def build_cluster(
    settings: ApiSettings,
    *,
    store: ApiStore,
    routes: SandboxRoutes,
    token: str | None = None,
    sweep: bool = True,
) -> Cluster:
    """Membership over ``store.nodes`` (ADR 0025), the registry of node clients it
    reconciles registering nodes through, and the router over it (wrapped to keep
    ``routes``); ``token`` defaults to the settings' cluster token (``hutch serve`` makes
    one per start). ``sweep`` False: no lost-node sweeper (``hutch serve``, whose one node
    lives in its own process)."""
    from hutch import __version__
    from hutch.shared.nodewire import API_VERSION

    token = token if token is not None else settings.effective_cluster_token()
    registry = NodeRegistry(nodes=store.nodes, token=token)
    membership = MembershipService(
        nodes=store.nodes,
        policy=MembershipPolicy(
            api_version=API_VERSION,
            version=__version__,
            lease_s=settings.cluster_lease_s,
            grace_s=settings.cluster_lost_grace_s,
        ),
        on_registered=registration_reconciler(
            teams=store.teams,
            sandboxes=store.sandboxes,
            client=registry.client,
            forget=registry.forget,
            routes=routes,
        ),
    )

    async def find_sandbox(sandbox_id: SandboxID) -> Sandbox | None:
        return await store.sandboxes.find_sandbox(sandbox_id, team_id=None)

    holdings = getattr(store, "artifacts", None)
    build_files = getattr(store, "build_files", None)

    async def template_id(id_or_alias: str) -> str | None:
        found = await store.templates.find_template_any_team(id_or_alias)
        return found.id if found is not None else None

    artifacts = ArtifactService(holdings) if holdings is not None else None
    router = NodeRouter(
        clients=registry, find_sandbox=find_sandbox, list_nodes=store.nodes.list_nodes,
        artifacts=artifacts,
        # A sandbox's call to a node that stops answering ends with its lease (ADR 0033).
        lease_watch=LeaseWatch(nodes=store.nodes, interval_s=settings.cluster_lease_s / 3),
    )  # fmt: skip
    if artifacts is not None:
        reconcile = membership.on_registered

        async def sync(node_id: NodeID, names: Sequence[str], replace: bool) -> None:
            await artifacts.sync(node_id, names, replace=replace)

        async def registered(reg: Registered) -> ReconcileOutcome:
            outcome = await reconcile(reg) if reconcile is not None else ReconcileOutcome()
            # Deletes it missed while away are applied now (nothing left on its disk).
            await artifacts.collect(reg.node.id, delete_on=router.delete_on)
            return outcome

        membership.on_templates = sync
        membership.on_registered = registered
        membership.on_beat = lambda node_id: artifacts.collect_soon(
            node_id, delete_on=router.delete_on
        )
    sweeper = LostNodeSweeper(
        nodes=store.nodes, routes=routes,
        grace_s=settings.cluster_lost_grace_s, interval_s=settings.cluster_sweep_interval_s,
    )  # fmt: skip
    return Cluster(
        context=ClusterContext(
            membership=membership, token=token, sweeper=sweeper if sweep else None
        ),
        registry=registry,
        node=RoutedNodeClient(router, routes=routes),
        artifacts=artifacts,
        templates=ClusterTemplates(router),
        builds=(
            ClusterBuilds(router, files=build_files, artifacts=artifacts, template_id=template_id)
            if build_files is not None
            else None
        ),
        volumes=ClusterVolumeHosts(
            clients=registry, list_nodes=store.nodes.list_nodes, get_node=store.nodes.get_node
        ),
    )


def placement_policy(settings: ApiSettings) -> PlacementPolicy:
    """The settings' placement knobs."""
    return PlacementPolicy(
        cpu_overcommit=settings.placement_cpu_overcommit,
        memory_overcommit=settings.placement_memory_overcommit,
        max_sandboxes_per_node=settings.max_sandboxes_per_node or None,
    )


def build_context(
    settings: ApiSettings,
    *,
    node: NodeClient,
    store: ApiStore,
    volume_backends: dict[str, VolumeBackend],
    volume_hosts: VolumeHosts | None = None,
    clock: Clock = utc_now,
    builder: TemplateBuilder | None = None,
    build_runner: BuildRunner | None = None,
    node_status: NodeStatusSource | None = None,
    locks: SandboxLockFamily | None = None,
    upload_secret: bytes | None = None,
    placement: PlacementPolicy | None = None,
    artifacts: ArtifactService | None = None,
    template_deletes: TemplateBuilder | None = None,
) -> tuple[HttpContext, Reaper]:
    """The services over ``store`` and ``node``, and the reaper that shares them.

    ``locks``: the per-sandbox lock family (the store's, across api processes on
    PostgreSQL); default the in-process one."""
    policy = SandboxPolicy(
        default_timeout_v2_s=settings.default_timeout_v2_s,
        default_timeout_v1_s=settings.default_timeout_v1_s,
        envd_version=settings.envd_version,
        max_sandboxes_per_node=settings.max_sandboxes_per_node or None,
    )

    async def kill_for_volume(team_id: TeamID, sandbox_id: SandboxID) -> object:
        return await sandboxes.kill_sandbox(team_id=team_id, sandbox_id=sandbox_id)

    volumes = VolumeService(
        volumes=store.volumes,
        backends=volume_backends,
        policy=VolumePolicy(
            default_size_mb=settings.volume_default_size_mb,
            token_ttl_s=settings.volume_token_ttl_s,
            backend=settings.volume_backend,
        ),
        clock=clock,
        kill_sandbox=kill_for_volume,
        hosts=volume_hosts,
    )
    quotas = QuotaService(teams=store.teams, defaults=settings.team_quota_defaults())
    volumes.quotas = quotas
    if locks is None:
        locks = SandboxLocks(wait_s=settings.sandbox_lock_wait_s)
    sandboxes = SandboxService(
        quotas=quotas,
        sandboxes=store.sandboxes,
        templates=store.templates,
        node=node,
        policy=policy,
        clock=clock,
        locks=locks,
        volumes=volumes,
        placement=placement,
        node_stats=store.nodes if placement is not None else None,
        artifacts=artifacts,
        snapshots=store.snapshots,
        lease_watch=LeaseWatch(nodes=store.nodes, interval_s=settings.cluster_lease_s / 3)
        if placement is not None
        else None,
    )
    pausing = PauseService(
        quotas=quotas,
        sandboxes=store.sandboxes,
        node=node,
        locks=locks,
        service=sandboxes,
        policy=policy,
        clock=clock,
    )
    # ``template_deletes``: a cluster api without a builder (``ClusterTemplates``) deletes
    # templates on every holder and runs imports on a node it chooses (its import worker
    # runs); its SDK builds run on a node chosen per build (``ClusterBuilds``).
    templates = TemplateService(
        templates=store.templates, builder=builder if builder is not None else template_deletes
    )

    async def delete_team_volumes(team_id: TeamID) -> int:
        owned = await volumes.list(team_id=team_id)
        for volume in owned:
            with contextlib.suppress(NotFoundError):
                await volumes.delete(team_id=team_id, id_or_name=volume.id, force=True)
        return len(owned)

    async def delete_team_templates(team_id: TeamID) -> int:
        owned = await store.templates.list_templates(team_id=team_id)
        for template in owned:
            # No builder: this server made no template files; the rows go with the team.
            with contextlib.suppress(NotFoundError, UnavailableError):
                await templates.delete_template(template.id, team_id=team_id)
        return len(owned)

    async def kill_for_team(team_id: TeamID, sandbox_id: str) -> object:
        return await sandboxes.kill_sandbox(team_id=team_id, sandbox_id=sandbox_id)

    builds = TemplateBuildService(
        templates=store.templates,
        runner=build_runner,
        quotas=quotas,
        jobs=store.builds,
        upload_tokens=UploadTokens(upload_secret),
    )

    async def cancel_team_builds(team_id: TeamID) -> tuple[int, int]:
        # Any api may cancel: the builds are the store's rows, and the worker running one
        # (of whichever api) stops it at its next heartbeat.
        return await builds.cancel_team_builds(team_id, reason="cancelled by an admin")

    ctx = HttpContext(
        usage=UsageSampler(
            sandboxes=store.sandboxes,
            samples=store.usage,
            volumes=store.volumes,
            interval_s=settings.usage_interval_s,
            clock=clock,
        ),
        teams=TeamService(
            teams=store.teams,
            keys=store.keys,
            sandboxes=store.sandboxes,
            quotas=quotas,
            cleanup=TeamCleanup(
                kill_sandbox=kill_for_team,
                delete_volumes=delete_team_volumes,
                delete_templates=delete_team_templates,
                cancel_builds=cancel_team_builds,
            ),
        ),
        sandboxes=sandboxes,
        keys=KeyService(
            teams=store.teams,
            keys=store.keys,
            limiter=RateLimiter(
                rate_per_s=settings.rate_limit_per_s, burst=settings.rate_limit_burst
            ),
        ),
        templates=templates,
        builds=builds,
        tags=TemplateTagService(templates=store.templates),
        metadata=MetadataService(sandboxes=store.sandboxes, node=node, locks=locks),
        network=NetworkService(sandboxes=store.sandboxes, node=node, locks=locks),
        volumes=volumes,
        pausing=pausing,
        snapshots=SnapshotService(
            sandboxes=store.sandboxes,
            templates=store.templates,
            snapshots=store.snapshots,
            node=node,
            locks=locks,
            service=sandboxes,
            artifacts=artifacts,
        ),
        domain=settings.domain,
        envd_version=settings.envd_version,
        host_key_file=settings.home / CLI_KEY_FILE,
        node_status=node_status,
        cluster_token=settings.effective_cluster_token(),
        imports=TemplateImportService(
            templates=store.templates,
            jobs=store.imports,
            builder=builder if builder is not None else template_deletes,
            policy=ImportPolicy(lease_s=settings.import_lease_s),
        ),
    )
    reaper = Reaper(
        sandboxes=store.sandboxes,
        service=sandboxes,
        pausing=pausing,
        clock=clock,
        interval_s=settings.reaper_interval_s,
        stale_create_s=settings.create_stale_after_s,
    )
    sandboxes.on_deadline_passed = reaper.nudge
    return ctx, reaper


def create_app(
    settings: ApiSettings,
    *,
    node: NodeClient | None,
    store: ApiStore | None = None,
    clock: Clock = utc_now,
    run_reaper: bool = True,
    volume_backends: dict[str, VolumeBackend] | None = None,
    volume_hosts: VolumeHosts | None = None,
    builder: TemplateBuilder | None = None,
    build_runner: BuildRunner | None = None,
    on_context: Callable[[HttpContext], None] | None = None,
    node_status: NodeStatusSource | None = None,
    singletons: Mapping[str, SingletonFactory] | None = None,
    cluster: ClusterContext | None = None,
    routes: SandboxRoutes | None = None,
    mounts: Sequence[BaseRoute] = (),
) -> Starlette:
    """The ASGI app. Without ``store``, the SQL store at the settings' URL is opened (and
    migrated when ``settings.migrate``) at startup and closed at shutdown. Without
    ``builder``, template imports answer 503.

    The reaper, the usage sampler and ``singletons`` (name → coroutine factory, e.g. a
    lost-node sweeper) run only while this api is the elected leader (ADR 0024); the
    elector is ``app.state.leader`` (more singletons may register there at any time).

    ``cluster`` (:func:`build_cluster`) serves node registration and ``GET /nodes`` (ADR
    0025); without it, the settings' cluster token (when set) makes one at startup over the
    store (publishing to ``routes`` when given), else they answer 503. With a cluster and
    no ``node`` client, calls go to each sandbox's node and creates are placed; its
    lost-node sweeper runs as the singleton ``lost-nodes``.

    ``mounts``: more routes after the API's own (the web dashboard's, ``hutch.dashboard``,
    which this package never imports)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        opened: Any = None
        the_store = store
        if the_store is None:
            from hutch.api.store.sql import open_sql_store  # keeps SQLAlchemy out of imports

            settings.home.mkdir(parents=True, exist_ok=True)
            opened = await open_sql_store(
                settings.effective_database_url(), migrate=settings.migrate
            )
            the_store = opened
        coordination = _coordination(the_store, settings)
        leader: Leadership = coordination.leader if coordination else AlwaysLeader()
        registry: NodeRegistry | None = None
        artifacts: ArtifactService | None = None
        the_node, the_cluster = node, cluster
        template_deletes: TemplateBuilder | None = None
        the_runner = build_runner
        built_volumes: ClusterVolumeHosts | None = None
        if cluster is None and settings.effective_cluster_token():
            # A scale-out api: nodes register here, calls go to each sandbox's node; their
            # routes are the store's (the edge proxy reads them) unless ``routes`` is given.
            built = build_cluster(
                settings, store=the_store, routes=routes if routes is not None else NoRoutes()
            )
            registry, the_cluster = built.registry, built.context
            built_volumes = built.volumes
            app.state.cluster = the_cluster
            if the_node is None:
                the_node, artifacts = built.node, built.artifacts
                if builder is None:
                    template_deletes = built.templates  # deletes reach every holder
                if build_runner is None:
                    the_runner = built.builds  # SDK builds placed on a node
        if the_node is None:
            raise ValueError("create_app needs a node client, or a cluster token to route")
        # Local volumes live on nodes (ADR 0034): over the node API when calls are routed
        # to registered nodes (``volume_hosts``: serve's; or the cluster built here); an
        # api handed a node client without membership keeps them in its own directory
        # (the tests' fake node; a configured node list sharing that directory).
        hosts = volume_hosts
        if hosts is None and node is None and built_volumes is not None:
            hosts = built_volumes
        # Backends handed in belong to the caller; the ones made here are closed (host
        # mounts released) at shutdown.
        own_backends = (
            build_volume_backends(settings, local=hosts is None) if volume_backends is None else {}
        )
        backends = volume_backends if volume_backends is not None else own_backends
        ctx, reaper = build_context(
            settings,
            node=the_node,
            store=the_store,
            volume_backends=backends,
            volume_hosts=hosts,
            clock=clock,
            builder=builder,
            build_runner=the_runner,
            node_status=node_status,
            locks=coordination.locks if coordination else None,
            artifacts=artifacts,
            template_deletes=template_deletes,
            upload_secret=await upload_secret(the_store, settings),
            # Routing through the registry (serve's cluster, or no node client handed in):
            # every create is placed among the registered nodes. A node client handed in
            # with a token (``hutch api``'s configured ``NodeSet``) places by itself.
            placement=placement_policy(settings) if cluster is not None or node is None else None,
        )
        app.state.ctx = ctx
        app.state.leader = leader
        if on_context is not None:
            on_context(ctx)  # e.g. serve wires the proxy's auto-resume to ctx.pausing
        app.state.reaper = reaper
        # The loop the store's connections belong to (tests submit work to it).
        app.state.loop = asyncio.get_running_loop()
        if run_reaper:
            leader.run_while_leader("reaper", reaper.run)
            if ctx.usage is not None:
                leader.run_while_leader("usage", ctx.usage.run)
        build_files = getattr(the_store, "build_files", None)
        if run_reaper and build_files is not None:
            sweeper = BuildFileSweeper(
                build_files, retention_s=settings.build_files_retention_s,
                interval_s=settings.build_files_sweep_interval_s,
            )  # fmt: skip
            app.state.build_file_sweeper = sweeper
            leader.run_while_leader("build-files", sweeper.run)
        for name, factory in (singletons or {}).items():
            leader.run_while_leader(name, factory)
        if run_reaper and the_cluster is not None and the_cluster.sweeper is not None:
            leader.run_while_leader("lost-nodes", the_cluster.sweeper.run)
        campaign = asyncio.create_task(leader.run(), name="hutch-leader")
        worker = _build_worker(ctx, the_store, settings)
        working = asyncio.create_task(worker.run(), name="hutch-builds") if worker else None
        importer = _import_worker(ctx, the_store, settings)
        importing = asyncio.create_task(importer.run(), name="hutch-imports") if importer else None
        # Every api reports the live-sandbox gauges on its own metrics (not a singleton).
        gauges = (
            asyncio.create_task(
                metrics.sample_sandboxes(
                    the_store.sandboxes.count_live, interval_s=settings.usage_interval_s
                ),
                name="hutch-sandbox-gauges",
            )
            if run_reaper
            else None
        )
        try:
            yield
        finally:
            for running in (importing, working, gauges, campaign):
                if running is not None:
                    running.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await running
            if registry is not None:
                await registry.aclose()
            if coordination is not None:
                await coordination.aclose()
            for backend in own_backends.values():
                await backend.aclose()
            if opened is not None:
                await opened.close()

    app = Starlette(
        routes=[
            *routes_health.ROUTES,
            *routes_status.ROUTES,
            *routes_keys.ROUTES,
            *routes_admin.ROUTES,
            *routes_sandboxes.ROUTES,
            *routes_metadata.ROUTES,
            *routes_snapshots.ROUTES,
            # First: "/templates/tags" must not reach "DELETE /templates/{template_id}".
            *routes_template_builds.ROUTES,
            *routes_imports.ROUTES,
            *routes_templates.ROUTES,
            *routes_volumes.ROUTES,
            *routes_volumecontent.ROUTES,
            *routes_edge.ROUTES,
            *routes_cluster.ROUTES,
            *routes_nodes.ROUTES,
            *routes_unsupported.ROUTES,
            *mounts,
        ],
        exception_handlers=dict(EXCEPTION_HANDLERS),
        lifespan=lifespan,
        middleware=[
            Middleware(
                Observe,
                requests=metrics.REQUESTS,
                seconds=metrics.REQUEST_SECONDS,
                access_log="hutch.api.access",
                span_prefix="api",
            ),
        ],
    )
    app.router.redirect_slashes = False
    app.state.cluster = cluster if cluster is not None else ClusterContext(None, None)
    return app


async def upload_secret(store: ApiStore, settings: ApiSettings) -> bytes:
    """The template upload-token key: the settings', else the store's shared one (made by
    the first api that asks), so every api signs and checks with the same key."""
    if settings.template_upload_secret:
        return settings.template_upload_secret.encode()
    import secrets

    value = await store.secrets.get_or_create(UPLOAD_SECRET_NAME, lambda: secrets.token_hex(32))
    return value.encode()


def _build_worker(ctx: HttpContext, store: object, settings: ApiSettings) -> Any:
    """This api's template build worker (``service/template_jobs.py``), when it can build:
    woken by its own starts, by NOTIFY on PostgreSQL, and by its poll."""
    from hutch.api.service.template_jobs import BuildWorker
    from hutch.api.store.builds import build_listener
    from hutch.api.store.engine import is_sqlite
    from hutch.api.store.sql import SqlStore

    if ctx.builds is None or not ctx.builds.can_build:
        return None
    engine = store.engine if isinstance(store, SqlStore) else None
    worker = BuildWorker(
        ctx.builds,
        listen=build_listener(engine) if engine is not None else None,
        poll_s=settings.build_poll_interval_s,
        orphan_after_s=settings.build_orphan_after_s,
        # SQLite means one api: a claim this process did not make is a previous run's.
        orphans_at_start=engine is None or is_sqlite(engine),
    )
    ctx.builds.on_started = worker.wake
    return worker


def _import_worker(ctx: HttpContext, store: object, settings: ApiSettings) -> Any:
    """This api's template import worker (``service/import_jobs.py``), when it can import:
    woken by its own submits, by NOTIFY on PostgreSQL, and by its poll."""
    from hutch.api.service.import_jobs import ImportWorker
    from hutch.api.store.builds import build_listener
    from hutch.api.store.engine import is_sqlite
    from hutch.api.store.imports import IMPORTS_CHANNEL
    from hutch.api.store.sql import SqlStore

    if ctx.imports is None or not ctx.imports.can_import:
        return None
    engine = store.engine if isinstance(store, SqlStore) else None
    worker = ImportWorker(
        ctx.imports,
        listen=build_listener(engine, channel=IMPORTS_CHANNEL) if engine is not None else None,
        poll_s=settings.build_poll_interval_s,
        # SQLite means one api: a claim this process did not make is a previous run's.
        take_over_at_start=engine is None or is_sqlite(engine),
    )
    ctx.imports.on_queued = worker.wake
    return worker


def _coordination(store: object, settings: ApiSettings) -> Any:
    """The SQL store's locks and elector (``store/coordination.py``); ``None`` for a store
    that is not SQL (a test's fake: in-process locks, always the leader)."""
    from hutch.api.store.coordination import open_coordination
    from hutch.api.store.sql import SqlStore

    if not isinstance(store, SqlStore):
        return None
    return open_coordination(
        store.engine,
        lock_wait_s=settings.sandbox_lock_wait_s,
        leader_interval_s=settings.leader_interval_s,
    )
