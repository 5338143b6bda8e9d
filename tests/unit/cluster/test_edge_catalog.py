"""``StoreCatalog``, the edge's routes: NOTIFY events first, the store on a miss, and never
a route after a withdrawal (ADR 0019)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from hutch.api.models import SandboxState
from hutch.cluster.edge import StoreCatalog, asyncpg_params
from hutch.cluster.routes import RouteEvent
from hutch.proxy.catalog import NodeHop
from hutch.shared.ids import NodeID, SandboxID

HOP = NodeHop(host="127.0.0.1", port=7001, token="t0k")


@dataclass
class Rows:
    rows: dict[str, Any] = field(default_factory=dict)
    reads: int = 0
    gate: asyncio.Event | None = None

    async def find_sandbox(self, sandbox_id: str, *, team_id: object) -> Any:
        self.reads += 1
        if self.gate is not None:
            await self.gate.wait()
        return self.rows.get(sandbox_id)


def _row(sid: str, state: SandboxState, *, node: str = "n1", auto_resume: bool = False) -> Any:
    return SimpleNamespace(id=sid, state=state, node_id=node, address="10.9.0.2",
                           envd_access_token="e", auto_resume=auto_resume,
                           traffic_access_token=None,
                           network=SimpleNamespace(mask_request_host=None))  # fmt: skip


def _catalog(rows: Rows, *, listening: bool = True) -> StoreCatalog:
    hops = {NodeID("n1"): HOP}
    catalog = StoreCatalog(SimpleNamespace(sandboxes=rows), hops=hops.get)  # type: ignore[arg-type]
    catalog.reset(listening=listening)
    return catalog


def _publish(sid: str, **kw: Any) -> RouteEvent:
    return RouteEvent("publish", SandboxID(sid), node_id=kw.pop("node", "n1"),
                      address="10.9.0.2", envd_access_token="e", **kw)  # fmt: skip


async def test_edge_catalog_event_routes_through_the_node_hop() -> None:
    rows = Rows()
    catalog = _catalog(rows)
    catalog.apply(RouteEvent.decode(_publish("s1").encode()))
    route = await catalog.lookup(SandboxID("s1"))
    assert route is not None and route.running
    assert route.address(8080) == ("127.0.0.1", 7001)
    assert route.hop_headers(8080) == [
        (b"e2b-sandbox-id", b"s1"), (b"e2b-sandbox-port", b"8080"), (b"x-hutch-node-token", b"t0k"),
    ]  # fmt: skip
    assert rows.reads == 0


async def test_edge_catalog_withdrawal_beats_a_row_still_running() -> None:
    rows = Rows({"s1": _row("s1", SandboxState.RUNNING)})
    catalog = _catalog(rows)
    catalog.apply(_publish("s1"))
    catalog.apply(RouteEvent("withdraw", SandboxID("s1"), running=False))
    # The kill is still in progress: the row says running, the tombstone wins.
    assert await catalog.lookup(SandboxID("s1")) is None
    assert rows.reads == 0


async def test_edge_catalog_miss_reads_the_store_and_caches_while_listening() -> None:
    rows = Rows({"s1": _row("s1", SandboxState.RUNNING), "s2": _row("s2", SandboxState.KILLED),
                 "s3": _row("s3", SandboxState.PAUSED, auto_resume=True),
                 "s4": _row("s4", SandboxState.RUNNING, node="gone")})  # fmt: skip
    catalog = _catalog(rows)
    first = await catalog.lookup(SandboxID("s1"))
    assert first is not None and first.running and first.via == HOP
    assert await catalog.lookup(SandboxID("s1")) == first and rows.reads == 1  # cached
    assert await catalog.lookup(SandboxID("s2")) is None  # killed
    paused = await catalog.lookup(SandboxID("s3"))
    assert paused is not None and not paused.running and paused.auto_resume
    assert await catalog.lookup(SandboxID("s4")) is None  # a node this edge does not know
    assert await catalog.lookup(SandboxID("nope")) is None


async def test_edge_catalog_caches_nothing_without_listen() -> None:
    rows = Rows({"s1": _row("s1", SandboxState.RUNNING)})
    catalog = _catalog(rows, listening=False)
    assert await catalog.lookup(SandboxID("s1")) is not None
    assert await catalog.lookup(SandboxID("s1")) is not None
    assert rows.reads == 2  # no events arrive: every request reads the store


async def test_edge_catalog_read_racing_an_event_is_not_cached() -> None:
    rows = Rows({"s1": _row("s1", SandboxState.RUNNING)}, gate=asyncio.Event())
    catalog = _catalog(rows)
    reading = asyncio.ensure_future(catalog.lookup(SandboxID("s1")))
    await asyncio.sleep(0)
    catalog.apply(RouteEvent("paused", SandboxID("s1"), running=False))  # during the read
    rows.rows["s1"] = _row("s1", SandboxState.PAUSED)
    rows.gate.set()  # type: ignore[union-attr]
    await reading
    again = await catalog.lookup(SandboxID("s1"))
    assert again is not None and not again.running  # read anew, not the raced "running"


async def test_edge_catalog_reset_drops_the_cache() -> None:
    catalog = _catalog(Rows())
    catalog.apply(_publish("s1"))
    catalog.reset(listening=False)
    assert catalog.find(SandboxID("s1")) is None and not catalog.listening


def test_edge_route_event_round_trip_and_bad_payloads() -> None:
    event = _publish("s1", running=False, auto_resume=True)
    assert RouteEvent.decode(event.encode()) == event
    for bad in ('{"op": "explode", "id": "x"}', "[]"):
        try:
            RouteEvent.decode(bad)
        except ValueError:
            continue
        raise AssertionError(bad)


def test_edge_asyncpg_params_from_a_socket_url() -> None:
    params = asyncpg_params("postgresql+asyncpg://postgres@/hutch?host=/tmp/pg/run")
    assert params == {"user": "postgres", "database": "hutch", "host": "/tmp/pg/run"}


async def test_edge_store_down_is_a_retryable_503() -> None:
    from sqlalchemy.exc import OperationalError

    from hutch.proxy.server import create_app
    from hutch.shared.errors import UnavailableError

    class Down:
        async def find_sandbox(self, sandbox_id: str, *, team_id: object) -> Any:
            raise OperationalError("SELECT", {}, ConnectionRefusedError())

    catalog = _catalog(Down())  # type: ignore[arg-type]
    try:
        await catalog.lookup(SandboxID("s1"))
    except UnavailableError:
        pass
    else:
        raise AssertionError("no UnavailableError")
    scope = {"type": "http", "method": "GET", "path": "/", "query_string": b"",
             "headers": [(b"e2b-sandbox-id", b"s1"), (b"e2b-sandbox-port", b"49983")]}  # fmt: skip
    status, body = await create_app(catalog).resolve(scope)  # type: ignore[misc]
    assert status == 503 and b"retry" in body


async def test_edge_wake_reads_the_resumed_route_before_its_event_arrives() -> None:
    rows = Rows({"s1": _row("s1", SandboxState.PAUSED, auto_resume=True)})

    async def waker(sid: SandboxID) -> None:  # the api resumed it: the row runs again
        rows.rows[sid] = _row(sid, SandboxState.RUNNING, auto_resume=True)

    hops = {NodeID("n1"): HOP}
    catalog = StoreCatalog(SimpleNamespace(sandboxes=rows), hops=hops.get, waker=waker)  # type: ignore[arg-type]
    catalog.reset(listening=True)
    catalog.apply(_publish("s1", auto_resume=True))
    catalog.apply(RouteEvent("paused", SandboxID("s1"), running=False))
    woken = await catalog.wake(SandboxID("s1"))  # no "publish" event has come yet
    assert woken is not None and woken.running


async def test_edge_registry_hops_read_the_proxy_label_of_a_registered_node() -> None:
    from hutch.cluster.edge import PROXY_LABEL, RegistryHops
    from hutch.shared.errors import NotFoundError

    class Nodes:
        reads = 0

        async def get_node(self, node_id: str) -> Any:
            self.reads += 1
            if node_id == "n2":
                return SimpleNamespace(labels={PROXY_LABEL: "10.0.0.12:5008"})
            if node_id == "bare":
                return SimpleNamespace(labels={})
            raise NotFoundError(f"node {node_id} not found")

    nodes = Nodes()
    static = {NodeID("n1"): HOP}
    hops = RegistryHops(SimpleNamespace(nodes=nodes), token="t0k", static=static.get)  # type: ignore[arg-type]
    await hops.ensure(NodeID("n1"))
    assert hops(NodeID("n1")) == HOP and nodes.reads == 0  # configured: no read
    assert hops(NodeID("n2")) is None  # not read yet
    await hops.ensure(NodeID("n2"))
    await hops.ensure(NodeID("n2"))
    assert hops(NodeID("n2")) == NodeHop(host="10.0.0.12", port=5008, token="t0k")
    assert nodes.reads == 1  # remembered
    for unroutable in ("bare", "never"):
        await hops.ensure(NodeID(unroutable))
        assert hops(NodeID(unroutable)) is None
    # A store read through the catalog learns the node first.
    rows = Rows({"s9": _row("s9", SandboxState.RUNNING, node="n2")})
    catalog = StoreCatalog(SimpleNamespace(sandboxes=rows), hops=hops, ensure_hop=hops.ensure)  # type: ignore[arg-type]
    route = await catalog.lookup(SandboxID("s9"))
    assert route is not None and route.via is not None and route.via.host == "10.0.0.12"
