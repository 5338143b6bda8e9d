"""``run(settings)``: the api, the proxy and the node API on uvicorn servers, one event loop.

The api reaches its node only through the node API (docs/node-api.md), here on a Unix
socket in the home with a token made per start: the same ``HttpNodeClient`` a scale-out api
uses, so the whole suite tests that one code path (ADR 0017). Startup order (each step
needs the one before):

1. open the store (migrating it): the api's source of truth;
2. build the node (``build_node``) and seed template rows from its templates on disk;
3. ``manager.start()`` (bridge, firewall), serve the node API, then register the node as
   every node registers (``node/membership.Registrar`` → ``POST /hutch/cluster/nodes``,
   in-process; ADR 0025), which reconciles its store rows with it through the node API
   (``api/service/reconcile.py``) and gives adopted sandboxes
   their proxy routes back; then the warm pool starts filling in the background (ADR 0011);
4. serve the proxy, then the api: ``GET /health`` on the api answering 200 means ready.

SIGTERM/SIGINT stop the servers (the node API last), destroy the idle warm pool members and
close the store, but **leave sandboxes running**: the next start adopts them (or cleans
them up if their rows are gone; pool members left by a SIGKILL are unknown to the store
and destroyed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
from collections.abc import Callable

import httpx
import uvicorn

from hutch import __version__
from hutch.api.app import build_cluster, build_volume_backends, create_app
from hutch.api.http.auth import HttpContext
from hutch.api.http.routes_cluster import create_cluster_app
from hutch.api.nodes.registry import NodeRegistry
from hutch.api.store.sql import open_sql_store
from hutch.dashboard.app import Dashboard, local_url, store_secret
from hutch.node.app import Node, build_node, build_node_service
from hutch.node.http.app import create_node_app
from hutch.node.membership import Registrar, registration_factory
from hutch.node.runner import NodeApiServer, artifact_blobs_or_exit, node_api_server, private_socket
from hutch.node.runner import template_names as _template_names
from hutch.node.settings import NodeSettings
from hutch.node.templates.artifact import TemplateArtifact
from hutch.proxy.catalog import InMemorySandboxCatalog
from hutch.proxy.runner import create_config as proxy_config
from hutch.serve.catalog import CatalogRoutes
from hutch.serve.settings import ServeSettings
from hutch.serve.templates import seed_templates
from hutch.shared.ids import NodeID, SandboxID
from hutch.shared.telemetry import run_observed
from hutch.volumes.base import VolumeBackend

log = logging.getLogger("hutch.serve")

#: The lease of serve's in-process node (it beats every third of it).
_SERVE_LEASE_S = 3600.0

_Server = NodeApiServer  # a uvicorn server that leaves signals to serve(), for all three


async def serve(settings: ServeSettings) -> None:
    """Run hutch until SIGTERM/SIGINT (see the module docstring)."""
    api_settings = settings.api_settings()
    node_settings = settings.node_settings()
    artifact_blobs = await artifact_blobs_or_exit(node_settings, role="hutch serve")
    api_settings.home.mkdir(parents=True, exist_ok=True)
    store = await open_sql_store(api_settings.effective_database_url(), migrate=True)
    node = build_node(node_settings)
    volume_backends: dict[str, VolumeBackend] = {}
    node_api: NodeApiServer | None = None
    node_task: asyncio.Task[None] | None = None
    registry: NodeRegistry | None = None
    registrar: Registrar | None = None
    heartbeat: asyncio.Task[None] | None = None
    socket_path = private_socket(api_settings.home)
    dashboard_settings = settings.dashboard_settings()
    dashboard: Dashboard | None = None
    if dashboard_settings.enabled:
        dashboard = Dashboard(
            dashboard_settings, secret=store_secret(store.secrets),
            sandbox_url=local_url(settings.host, settings.proxy_port),
        )  # fmt: skip
    try:
        await seed_templates(
            store, await _templates_on_disk(node_settings, node),
            default_disk_mb=node_settings.default_disk_mb,
        )  # fmt: skip
        await node.manager.start()
        await node.egress.start()  # on the gateway address, which start() made sure of
        # Local volumes are the node's (ADR 0034): the api reaches them over the node API
        # like any api; it serves only the backends without a node (S3) itself.
        volume_backends = build_volume_backends(api_settings)
        service = build_node_service(
            node,
            node_settings,
            node_id=settings.node_id,
            volumes=volume_backends,
            artifact_blobs=artifact_blobs,
        )
        token = secrets.token_urlsafe(32)
        node_api = node_api_server(create_node_app(service, token=token), token=token,
                                   uds=socket_path)  # fmt: skip
        node_task = asyncio.create_task(node_api.serve(), name="hutch-node-api")
        while not node_api.started and not node_task.done():
            await asyncio.sleep(0.01)
        if node_task.done():
            raise SystemExit(f"hutch serve: the node API did not start on {socket_path}")
        catalog = InMemorySandboxCatalog()
        routes = CatalogRoutes(catalog)
        # Its one node lives in this process: a lease that a busy event loop cannot outrun,
        # and no sweeper (if this process stalls, so does everything it would sweep for).
        cluster = build_cluster(
            api_settings.model_copy(update={"cluster_lease_s": _SERVE_LEASE_S}),
            store=store, routes=routes, token=token, sweep=False,
        )  # fmt: skip
        registry = cluster.registry
        # The node registers like any other (ADR 0025): the same Registrar and routes,
        # in-process; the registration reconciles the store with it before serving.
        registrar = Registrar(
            api_urls=["http://serve"], token=token,
            registration=registration_factory(
                node_settings, node_id=settings.node_id, address=f"unix:{socket_path}",
                version=__version__, templates=_template_names(node),
            ),
            transport=httpx.ASGITransport(app=create_cluster_app(cluster.context)),
        )  # fmt: skip
        await registrar.register()
        heartbeat = asyncio.create_task(registrar.run(), name="hutch-node-heartbeat")
        # Templates and the status page are the one node's (placement covers sandboxes).
        client = await registry.client(NodeID(settings.node_id))
        await node.manager.start_pool()
        node.sampler.start()
        api = _Server(
            uvicorn.Config(
                create_app(
                    api_settings,
                    node=cluster.node,
                    store=store,
                    builder=client,
                    build_runner=client,
                    on_context=_wire_auto_resume(catalog),
                    volume_backends={
                        name: b for name, b in volume_backends.items() if name != "local"
                    },
                    volume_hosts=cluster.volumes,
                    node_status=client,
                    cluster=cluster.context,
                    mounts=dashboard.routes() if dashboard is not None else (),
                ),
                host=settings.host,
                port=settings.api_port,
                lifespan="on",
                ws="websockets-sansio",  # the dashboard's terminal (docs/dashboard.md)
                log_level="warning",
                access_log=False,
                server_header=False,
            )
        )
        proxy = _Server(proxy_config(catalog, host=settings.host, port=settings.proxy_port))
        await _run_both(proxy, api)
    finally:
        if heartbeat is not None:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
        if registrar is not None:
            await registrar.aclose()
        if registry is not None:
            await registry.aclose()
        if node_api is not None and node_task is not None:
            node_api.should_exit = True
            await asyncio.gather(node_task, return_exceptions=True)
            socket_path.unlink(missing_ok=True)
            if socket_path.parent != api_settings.home / "run":  # a temporary directory
                with contextlib.suppress(OSError):
                    socket_path.parent.rmdir()
        if dashboard is not None:
            await dashboard.aclose()
        await node.manager.stop_pool()
        # Host mounts of volumes are released; sandboxes still running keep their bind
        # mounts (the filesystem lives on in their mount namespaces until they end).
        for backend in volume_backends.values():
            await backend.aclose()
        await node.aclose()
        await store.close()


async def _templates_on_disk(settings: NodeSettings, node: Node) -> list[TemplateArtifact]:
    """The node's templates (own and shared), said in the log; an empty catalog is loud."""
    templates = await node.templates.list()
    shared = ", ".join(str(p) for p in settings.shared_templates_dirs) or "none"
    if templates:
        log.info(
            "templates: %s (own %s, shared read-only: %s)",
            " ".join(t.name for t in templates), settings.templates_dir, shared,
        )  # fmt: skip
    else:
        log.warning(
            "no templates: neither %s nor a shared directory (%s) has any, so every "
            "Sandbox.create() answers 404 until one is imported or built; install.sh builds "
            "busybox and base, HUTCH_NODE_SHARED_TEMPLATES_DIR names another home's templates",
            settings.templates_dir, shared,
        )  # fmt: skip
    return templates


def _wire_auto_resume(catalog: InMemorySandboxCatalog) -> Callable[[HttpContext], None]:
    """Let proxy traffic to a paused auto-resume sandbox resume it through the api."""

    def wire(ctx: HttpContext) -> None:
        async def wake(sandbox_id: SandboxID) -> None:
            await ctx.pausing.auto_resume(sandbox_id)

        catalog.waker = wake

    return wire


async def _run_both(proxy: uvicorn.Server, api: uvicorn.Server) -> None:
    """Serve until a signal, or until either server stops (e.g. its port was taken)."""
    loop = asyncio.get_running_loop()

    def stop() -> None:
        proxy.should_exit = api.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    tasks = [asyncio.create_task(proxy.serve(), name="hutch-proxy")]
    # The api last: its /health is the readiness signal, so the proxy must be up first.
    while not proxy.started and not tasks[0].done():
        await asyncio.sleep(0.01)
    tasks.append(asyncio.create_task(api.serve(), name="hutch-api"))
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        stop()
        await asyncio.gather(*tasks)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    if not (proxy.started and api.started):
        raise SystemExit("hutch serve: a server failed to start (is its port in use?)")
    log.info("stopped; sandboxes keep running until the next start reconciles them")


def run(settings: ServeSettings) -> None:
    """Blocking entry point for the CLI."""
    run_observed(serve(settings), service="hutch-serve")
