"""``hutch proxy``: the edge as its own process (ADR 0019, docs/proxy.md "The edge").

The same ``hutch.proxy`` app and routing as ``hutch serve``'s proxy, over a
:class:`StoreCatalog`: a cache of routes that the apis keep current through PostgreSQL
NOTIFY (``routes.py``), filled on a miss from the store (sandbox row → node → the node
proxy's address). Each route goes through its node's proxy (``NodeHop``), which holds the
authoritative local view: a sandbox the node no longer runs is "not found" there even if
an edge had not heard of the kill yet.

Never a stale route after a kill: the api sends the withdrawal before it asks the node to
kill, the edge drops the route and keeps a tombstone, so a store read that still sees the
row ``running`` (the kill has not ended) does not bring the route back. While the LISTEN
connection is down (PostgreSQL restarting), the cache is dropped and nothing is cached:
every request reads the store until the edge listens again.

Auto-resume: a paused ``autoResume`` sandbox is woken through an api
(``POST /hutch/edge/sandboxes/{id}/wake`` with the cluster token); the route is then read
from the store, which the resume has updated.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Final

import asyncpg
import httpx
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from hutch.api.models import Sandbox, SandboxState
from hutch.api.service.reconcile import live_rows
from hutch.api.store.sql import SqlStore, open_sql_store
from hutch.cluster.routes import CHANNEL, RouteEvent
from hutch.cluster.settings import ClusterSettings
from hutch.proxy.catalog import InMemorySandboxCatalog, NodeHop, SandboxRoute
from hutch.proxy.runner import create_config
from hutch.shared.errors import NotFoundError, UnavailableError
from hutch.shared.ids import NodeID, SandboxID
from hutch.shared.telemetry import run_observed

log = logging.getLogger("hutch.edge")

#: Killed sandboxes remembered so that a late store read cannot route to them again.
_TOMBSTONES: Final = 100_000
_RELISTEN_S: Final = 1.0

#: node id → the hop to its proxy, or None when the node is not known.
Hops = Callable[[NodeID], NodeHop | None]


class StoreCatalog(InMemorySandboxCatalog):
    """See the module docstring. ``listening`` says whether NOTIFY keeps the cache true."""

    def __init__(
        self,
        store: SqlStore,
        *,
        hops: Hops,
        ensure_hop: Callable[[NodeID], Awaitable[None]] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        #: Called before a store read's route is built: learn the node's proxy if new.
        self._ensure_hop = ensure_hop
        if self.waker is not None:
            self.waker = self._then_forget(self.waker)
        self._store = store
        self._hops = hops
        self._withdrawn: OrderedDict[SandboxID, None] = OrderedDict()
        #: Bumped by every event: a store read that raced an event is not cached.
        self._events = 0
        self.listening = False

    def _then_forget(
        self, waker: Callable[[SandboxID], Awaitable[None]]
    ) -> Callable[[SandboxID], Awaitable[None]]:
        """After a wake, the cached (paused) route is dropped: the resume's own event may
        not have arrived yet, and the store already has the running route."""

        async def wake(sandbox_id: SandboxID) -> None:
            await waker(sandbox_id)
            self._events += 1
            self.remove(sandbox_id)

        return wake

    # ---- events (NOTIFY) -------------------------------------------------------------

    def apply(self, event: RouteEvent) -> None:
        """Apply one route event to the cache."""
        self._events += 1
        sid = event.sandbox_id
        if event.op == "withdraw":
            self.remove(sid)
            self._tombstone(sid)
        elif event.op == "paused":
            route = self.find(sid)
            if route is not None:
                self.put(_replace(route, running=False))
        else:
            self._withdrawn.pop(sid, None)
            route = self._route(sid, event.node_id, event.address, event.envd_access_token,
                                running=event.running, auto_resume=event.auto_resume,
                                traffic_access_token=event.traffic_access_token,
                                mask_request_host=event.mask_request_host)  # fmt: skip
            if route is None:
                self.remove(sid)
            else:
                self.put(route)

    def reset(self, *, listening: bool) -> None:
        """Drop every cached route (the LISTEN connection was lost, or is back)."""
        self._routes.clear()
        self._events += 1
        self.listening = listening

    def _tombstone(self, sid: SandboxID) -> None:
        self._withdrawn[sid] = None
        self._withdrawn.move_to_end(sid)
        while len(self._withdrawn) > _TOMBSTONES:
            self._withdrawn.popitem(last=False)

    # ---- lookups -------------------------------------------------------------------------

    def _route(
        self, sid: SandboxID, node_id: str | None, address: str | None, token: str | None,
        *, running: bool, auto_resume: bool, traffic_access_token: str | None = None,
        mask_request_host: str | None = None,
    ) -> SandboxRoute | None:  # fmt: skip
        if node_id is None or address is None:
            return None
        hop = self._hops(NodeID(node_id))
        if hop is None:
            log.warning("sandbox %s runs on node %s, which this edge does not know", sid, node_id)
            return None
        return SandboxRoute(sandbox_id=sid, host=address, envd_access_token=token,
                            running=running, auto_resume=auto_resume, via=hop,
                            traffic_access_token=traffic_access_token,
                            mask_request_host=mask_request_host)  # fmt: skip

    def _row_route(self, row: Sandbox) -> SandboxRoute | None:
        if row.state is SandboxState.RUNNING:
            running = True
        elif row.state in (SandboxState.PAUSING, SandboxState.PAUSED, SandboxState.RESUMING):
            running = False
        else:
            return None
        return self._route(SandboxID(row.id), row.node_id, row.address, row.envd_access_token,
                           running=running, auto_resume=row.auto_resume,
                           traffic_access_token=row.traffic_access_token,
                           mask_request_host=row.network.mask_request_host)  # fmt: skip

    async def lookup(self, sandbox_id: SandboxID) -> SandboxRoute | None:
        """The cached route, else the store's (cached when no event raced the read)."""
        cached = self.find(sandbox_id)
        if cached is not None or sandbox_id in self._withdrawn:
            return cached
        before = self._events
        try:
            row = await self._store.sandboxes.find_sandbox(sandbox_id, team_id=None)
        except (SQLAlchemyError, OSError) as exc:
            raise UnavailableError(f"the store did not answer ({type(exc).__name__})") from exc
        if sandbox_id in self._withdrawn:
            return None
        if row is not None and row.node_id and self._ensure_hop is not None:
            await self._ensure_hop(NodeID(row.node_id))
        route = self._row_route(row) if row is not None else None
        if route is not None and self.listening and self._events == before:
            self.put(route)
        return route

    async def lookup_by_file_signature(
        self, query_string: bytes, method: str
    ) -> SandboxRoute | None:
        """The cache's match, else one pass over the store's running sandboxes."""
        found = self.find_by_file_signature(query_string, method)
        if found is not None:
            return found
        try:
            rows = await live_rows(teams=self._store.teams, sandboxes=self._store.sandboxes)
        except (SQLAlchemyError, OSError) as exc:
            raise UnavailableError(f"the store did not answer ({type(exc).__name__})") from exc
        routes = [r for r in map(self._row_route, rows) if r is not None]
        found = InMemorySandboxCatalog({r.sandbox_id: r for r in routes}).find_by_file_signature(
            query_string, method
        )
        if found is not None and found.sandbox_id in self._withdrawn:
            return None
        return found


def _replace(route: SandboxRoute, **changes: Any) -> SandboxRoute:
    return dataclasses.replace(route, **changes)


def asyncpg_params(url: str) -> dict[str, Any]:
    """``asyncpg.connect`` keywords for a SQLAlchemy ``postgresql+asyncpg://`` URL (a Unix
    socket directory given as ``?host=`` included)."""
    parsed = make_url(url)
    params: dict[str, Any] = {
        "user": parsed.username, "password": parsed.password, "database": parsed.database,
        "host": parsed.query.get("host") or parsed.host, "port": parsed.port,
    }  # fmt: skip
    return {k: v for k, v in params.items() if v is not None}


async def listen(catalog: StoreCatalog, url: str, *, stop: asyncio.Event) -> None:
    """Keep a LISTEN connection on :data:`CHANNEL`, feeding ``catalog``, until ``stop``."""
    params = asyncpg_params(url)
    while not stop.is_set():
        lost = asyncio.Event()
        try:
            conn = await asyncpg.connect(**params, timeout=10)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            log.warning("LISTEN %s: %s; retrying", CHANNEL, exc)
            catalog.reset(listening=False)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _RELISTEN_S)
            continue

        def on_event(_conn: object, _pid: int, _channel: str, payload: str) -> None:
            try:
                catalog.apply(RouteEvent.decode(payload))
            except ValueError as exc:
                log.warning("ignored: %s", exc)

        try:
            conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
            await conn.add_listener(CHANNEL, on_event)
            catalog.reset(listening=True)  # whatever was cached may have missed events
            log.info("listening on %s", CHANNEL)
            waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(lost.wait())]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
            if lost.is_set():
                log.warning("LISTEN connection lost; reading the store until it is back")
            catalog.reset(listening=False)
        finally:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)


def api_waker(api_urls: list[str], token: str, client: httpx.AsyncClient) -> Any:
    """A ``waker`` that asks the first api that answers to resume the sandbox."""

    async def wake(sandbox_id: SandboxID) -> None:
        failure: Exception | None = None
        for base in api_urls:
            try:
                response = await client.post(
                    f"{base}/hutch/edge/sandboxes/{sandbox_id}/wake",
                    headers={"Authorization": f"Bearer {token}"},
                )
            except httpx.TransportError as exc:
                failure = exc
                continue
            if response.status_code == 204:
                return
            raise UnavailableError(f"wake of {sandbox_id}: {response.status_code} {response.text}")
        raise UnavailableError(f"wake of {sandbox_id}: no api answered ({failure})")

    return wake


#: The label a node registers its proxy's ``HOST:PORT`` under (``hutch node --proxy-listen``).
PROXY_LABEL: Final = "hutch.dev/proxy"
_HOP_TTL_S: Final = 10.0


class RegistryHops:
    """Node proxies as the node registry knows them (issue 11's membership): each node
    registers its proxy's address as the label :data:`PROXY_LABEL`. Configured nodes
    (``HUTCH_CLUSTER_NODES``) come first; a node is read from the registry when first
    needed and again after :data:`_HOP_TTL_S` (it may have re-registered elsewhere)."""

    def __init__(self, store: SqlStore, *, token: str, static: Hops) -> None:
        self._store = store
        self._token = token
        self._static = static
        self._known: dict[NodeID, tuple[float, NodeHop | None]] = {}

    def __call__(self, node_id: NodeID) -> NodeHop | None:
        found = self._static(node_id)
        if found is not None:
            return found
        known = self._known.get(node_id)
        return known[1] if known is not None else None

    async def ensure(self, node_id: NodeID) -> None:
        """Read the node's proxy from the registry unless known lately."""
        if self._static(node_id) is not None:
            return
        known = self._known.get(node_id)
        if known is not None and time.monotonic() - known[0] < _HOP_TTL_S:
            return
        hop: NodeHop | None = None
        registry = getattr(self._store, "nodes", None)  # the nodes table (issue 11)
        try:
            if registry is None:
                raise NotFoundError(f"node {node_id}: no node registry in this store")
            node = await registry.get_node(node_id)
            host, sep, port = str(node.labels.get(PROXY_LABEL, "")).rpartition(":")
            if sep and port.isdigit() and host:
                hop = NodeHop(host=host.strip("[]"), port=int(port), token=self._token)
            else:
                log.warning("node %s registered no %s label: its sandboxes are not routable",
                            node_id, PROXY_LABEL)  # fmt: skip
        except NotFoundError:
            hop = None
        except (SQLAlchemyError, OSError) as exc:
            raise UnavailableError(f"the store did not answer ({type(exc).__name__})") from exc
        self._known[node_id] = (time.monotonic(), hop)


def static_hops(settings: ClusterSettings, token: str) -> Hops:
    """The node proxies the settings name (until the node registry of issue 11)."""
    hops: dict[NodeID, NodeHop] = {}
    for node in settings.cluster_nodes:
        host, port = node.proxy_host_port()
        hops[NodeID(node.id)] = NodeHop(host=host, port=port, token=token)
    return hops.get


async def run_edge(settings: ClusterSettings) -> None:
    """Serve the edge until SIGTERM/SIGINT."""
    from hutch.node.runner import NodeApiServer  # uvicorn leaving signals to us

    url = settings.postgres_url()
    token = settings.token()
    apis = settings.api_urls()
    if not apis:
        raise ValueError("the edge wakes sandboxes through an api: set HUTCH_EDGE_API_URLS")
    store = await open_sql_store(url, migrate=False)
    client = httpx.AsyncClient(timeout=httpx.Timeout(120.0, connect=5.0), trust_env=False)
    stop = asyncio.Event()
    try:
        hops = RegistryHops(store, token=token, static=static_hops(settings, token))
        catalog = StoreCatalog(store, hops=hops, ensure_hop=hops.ensure,
                               waker=api_waker(apis, token, client))  # fmt: skip
        listener = asyncio.create_task(listen(catalog, url, stop=stop), name="hutch-edge-listen")
        server = NodeApiServer(
            create_config(catalog, host=settings.proxy_host, port=settings.proxy_port)
        )
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            server.should_exit = True
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        try:
            await server.serve()
        finally:
            stop.set()
            await asyncio.gather(listener, return_exceptions=True)
        if not server.started:
            raise SystemExit("hutch proxy: failed to start (is its port in use?)")
    finally:
        await client.aclose()
        await store.close()


def run(settings: ClusterSettings) -> None:
    """Blocking entry point for ``hutch proxy``."""
    try:
        run_observed(run_edge(settings), service="hutch-proxy")
    except ValueError as exc:
        raise SystemExit(f"hutch proxy: {exc}") from None
