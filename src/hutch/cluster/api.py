"""``hutch api``: the api role alone, on PostgreSQL, reaching nodes over the node API.

Stateless: run any number behind a load balancer: the per-sandbox locks are PostgreSQL
advisory locks and the reaper runs on the elected leader only (ADR 0024). No node and no
proxy inside: sandboxes are placed on the configured nodes
(``NodeSet``; the node registry of issue 11 replaces the list), and edges learn routes
through NOTIFY (``routes.py``). Startup waits for every configured node to answer (they
may start after the api), then serves; ``GET /health`` answering 200 means ready.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time

import uvicorn
from pydantic import SecretStr

from hutch.api.app import create_app
from hutch.api.nodes.http_client import HttpNodeClient
from hutch.api.nodes.nodeset import NodeSet
from hutch.api.service.routing import RoutedNodeClient
from hutch.api.settings import ApiSettings
from hutch.api.store.sql import open_sql_store
from hutch.cluster.routes import NotifyRoutes
from hutch.cluster.settings import ClusterSettings
from hutch.dashboard.app import Dashboard, store_secret
from hutch.dashboard.settings import DashboardSettings
from hutch.node.runner import NodeApiServer
from hutch.shared.errors import UnavailableError
from hutch.shared.ids import NodeID, SandboxID
from hutch.shared.telemetry import run_observed

log = logging.getLogger("hutch.api")

#: How long startup waits for the configured nodes to answer.
NODE_WAIT_S = 120.0


async def _connect(url: str, token: str) -> HttpNodeClient:
    deadline = time.monotonic() + NODE_WAIT_S
    while True:
        try:
            return await HttpNodeClient.connect(url, token=token)
        except UnavailableError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def run_api(
    api: ApiSettings, cluster: ClusterSettings, dashboard: DashboardSettings | None = None
) -> None:
    """Serve the api until SIGTERM/SIGINT (with the web dashboard unless ``dashboard``
    disables it; its bridges reach sandboxes through ``HUTCH_DASHBOARD_SANDBOX_URL``)."""
    dashboard = dashboard if dashboard is not None else DashboardSettings()
    url = cluster.postgres_url()
    token = cluster.token()
    if not cluster.cluster_nodes:
        # No configured nodes: nodes register themselves (``hutch node --register``;
        # ADR 0025) and placement chooses among them.
        api = api.model_copy(update={"database_url": url, "cluster_token": SecretStr(token)})
        store = await open_sql_store(url, migrate=api.migrate)
        board = _dashboard(dashboard, store)
        try:
            app = create_app(
                api, node=None, store=store, routes=NotifyRoutes(store.engine),
                mounts=board.routes() if board is not None else (),
            )  # fmt: skip
            await _serve(app, api)
        finally:
            if board is not None:
                await board.aclose()
            await store.close()
        return
    # The per-node limit is each node's own (it refuses, and the next node is tried).
    api = api.model_copy(update={"max_sandboxes_per_node": 0, "database_url": url})
    store = await open_sql_store(url, migrate=api.migrate)
    board = _dashboard(dashboard, store)
    clients: list[HttpNodeClient] = []
    try:
        for node in cluster.cluster_nodes:
            client = await _connect(node.api, token)
            if client.node_id != node.id:
                raise ValueError(f"node at {node.api} says it is {client.node_id}, not {node.id}")
            clients.append(client)

        async def locate(sandbox_id: SandboxID) -> NodeID | None:
            row = await store.sandboxes.find_sandbox(sandbox_id, team_id=None)
            return None if row is None or row.node_id is None else NodeID(row.node_id)

        nodes = NodeSet(clients, locate=locate, count_on=store.sandboxes.count_on_node)
        app = create_app(
            api,
            node=RoutedNodeClient(nodes, routes=NotifyRoutes(store.engine)),
            store=store,
            builder=nodes,
            build_runner=nodes,
            node_status=nodes,
            mounts=board.routes() if board is not None else (),
        )
        await _serve(app, api)
    finally:
        if board is not None:
            await board.aclose()
        for client in clients:
            await client.aclose()
        await store.close()


def _dashboard(settings: DashboardSettings, store: object) -> Dashboard | None:
    if not settings.enabled:
        return None
    return Dashboard(settings, secret=store_secret(store.secrets))  # type: ignore[attr-defined]


async def _serve(app: object, api: ApiSettings) -> None:
    server = NodeApiServer(
        uvicorn.Config(
            app,  # type: ignore[arg-type]
            host=api.api_host,
            port=api.api_port,
            lifespan="on",
            ws="websockets-sansio",  # the dashboard's terminal (docs/dashboard.md)
            log_level="warning",
            access_log=False,
            server_header=False,
        )
    )
    loop = asyncio.get_running_loop()

    def stop() -> None:
        server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    await server.serve()
    if not server.started:
        raise SystemExit("hutch api: failed to start (is its port in use?)")


def run(api: ApiSettings, cluster: ClusterSettings) -> None:
    """Blocking entry point for ``hutch api``."""
    try:
        run_observed(run_api(api, cluster), service="hutch-api")
    except ValueError as exc:
        raise SystemExit(f"hutch api: {exc}") from None
