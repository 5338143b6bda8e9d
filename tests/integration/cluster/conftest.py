"""A real api (``create_app`` in uvicorn, cluster token set) on SQLite or the store tests'
PostgreSQL, and node APIs over fakes (``tests/fakes/sandboxes.py``) on Unix sockets that
register with it through the real ``node/membership.Registrar``: the registration wire,
membership, the registry and reconcile are real, only runc is not."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import uvicorn

from hutch import __version__
from hutch.api.app import create_app
from hutch.api.settings import ApiSettings
from hutch.node.http.app import create_node_app
from hutch.node.service import NodeIdentity, NodeService
from hutch.shared import clusterwire as wire
from hutch.shared.nodewire import API_VERSION
from tests.conftest import free_port
from tests.fakes.sandboxes import FakeSamples, FakeSandboxes, FakeTemplates, FakeVolumeBackend
from tests.integration.api.conftest import _seed
from tests.integration.store.conftest import (  # noqa: F401 - fixtures re-exported
    PostgresDatabases,
    postgres_databases,
    postgres_server_url,
    run_async,
)

TOKEN = "cluster-token-for-tests"
#: The template ids ``tests/integration/api/conftest._seed`` gives base and busybox.
SEEDED_TEMPLATES = ("basetemplate00000001", "busyboxtemplate00001")


def _thread_server(server: uvicorn.Server) -> threading.Thread:
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    return thread


@dataclass
class FakeNodeApi:
    """A node API over fakes on a Unix socket."""

    node_id: str
    socket: Path
    sandboxes: FakeSandboxes
    server: uvicorn.Server
    thread: threading.Thread
    volumes: FakeVolumeBackend | None = None

    @property
    def address(self) -> str:
        return f"unix:{self.socket}"

    async def registration(self, *, boot_id: str = "boot-1", version: str = __version__,
                     cpu_count: int = 8, memory_mb: int = 16384) -> wire.RegisterNode:  # fmt: skip
        return wire.RegisterNode(
            node_id=self.node_id, address=self.address, api_version=API_VERSION,
            version=version, boot_id=boot_id,
            capacity=wire.Capacity(cpu_count=cpu_count, memory_mb=memory_mb, disk_mb=100_000,
                                   max_sandboxes=self.sandboxes.capacity),
            labels={"zone": "test"},
            templates=list(SEEDED_TEMPLATES),
        )  # fmt: skip

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def start_fake_node(directory: Path, node_id: str, *, capacity: int = 50) -> FakeNodeApi:
    """A node API over fakes, serving on ``<directory>/<node_id>.sock``."""
    sandboxes = FakeSandboxes(capacity=capacity, templates=SEEDED_TEMPLATES)
    volumes = FakeVolumeBackend(directory / f"{node_id}-volumes")
    service = NodeService(
        identity=NodeIdentity(
            node_id=node_id,
            version=__version__,
            runtime="fake",
            max_sandboxes=capacity,
            pool_sizes={},
        ),
        sandboxes=sandboxes,
        sampler=FakeSamples(),
        templates=FakeTemplates(),  # type: ignore[arg-type]  # duck-typed TemplateManager
        volumes={"local": volumes},  # type: ignore[dict-item]
    )
    sock = directory / f"{node_id}.sock"
    server = uvicorn.Server(
        uvicorn.Config(
            create_node_app(service, token=TOKEN),
            uds=str(sock),
            lifespan="off",
            log_level="warning",
            access_log=False,
        )
    )
    return FakeNodeApi(node_id, sock, sandboxes, server, _thread_server(server), volumes)


@dataclass
class ClusterApi:
    """A running api with membership on."""

    url: str
    key: str
    admin_key: str
    database_url: str
    nodes: list[FakeNodeApi] = field(default_factory=list)

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"X-API-Key": self.admin_key}, timeout=30)

    def member(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"X-API-Key": self.key}, timeout=30)


def serve_api(database_url: str, home: Path, **settings: object) -> Iterator[ClusterApi]:
    """An api on ``database_url`` with the cluster token ``TOKEN`` (yields while it runs)."""
    key, _team, _other, admin_key = run_async(lambda: _seed(database_url))
    port = free_port()
    cfg = ApiSettings(
        home=home, database_url=database_url, api_host="127.0.0.1", api_port=port,
        reaper_interval_s=3600, usage_interval_s=3600, cluster_token=TOKEN,  # type: ignore[arg-type]
        **settings,  # type: ignore[arg-type]
    )  # fmt: skip
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(cfg, node=None),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
        )
    )
    thread = _thread_server(server)
    try:
        yield ClusterApi(f"http://127.0.0.1:{port}", key, admin_key, database_url)
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database: SQLite, then the store tests' PostgreSQL (``postgres_only``)."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'hutch.db'}"
    dbs: PostgresDatabases = request.getfixturevalue("postgres_databases")
    return dbs.create()


#: For a test of several apis on one database (each its own store): PostgreSQL only, since
#: SQLite serves one api (ADR 0024); on SQLite it would run the same code a second time.
postgres_only = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


@pytest.fixture
def cluster_api(database_url: str, tmp_path: Path) -> Iterator[ClusterApi]:
    """An api with membership on, and a factory of fake nodes beside it."""
    yield from serve_api(database_url, tmp_path)


@contextlib.contextmanager
def beating(api_url: str, node: FakeNodeApi, *, boot_id: str = "boot-1") -> Iterator[None]:
    """The node registered and beating (the real ``Registrar``, in a thread of its own)
    while the block runs; silent after it."""
    from hutch.node.membership import Registrar

    loop = asyncio.new_event_loop()
    registered = threading.Event()
    stopped: asyncio.Event | None = None

    async def main() -> None:
        nonlocal stopped
        stopped = asyncio.Event()
        registrar = Registrar(
            api_urls=[api_url], token=TOKEN,
            registration=lambda: node.registration(boot_id=boot_id),
        )  # fmt: skip
        try:
            await registrar.register()
            registered.set()
            beat = asyncio.create_task(registrar.run())
            await stopped.wait()
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)
        finally:
            registered.set()
            await registrar.aclose()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    registered.wait(30)
    try:
        yield
    finally:
        assert stopped is not None
        loop.call_soon_threadsafe(stopped.set)
        thread.join(30)
        loop.close()


def wait_for(check: Callable[[], object], *, timeout_s: float = 30.0, what: str = "") -> object:
    """Poll ``check`` until it returns something truthy (a timeout for waiting only)."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.1)


@pytest.fixture
def fake_nodes(tmp_path: Path) -> Iterator[Callable[..., FakeNodeApi]]:
    """``fake_nodes(node_id, capacity=...)`` starts a node API over fakes (stopped after)."""
    started: list[FakeNodeApi] = []

    def start(node_id: str, **kwargs: int) -> FakeNodeApi:
        node = start_fake_node(tmp_path, node_id, **kwargs)
        started.append(node)
        return node

    yield start
    for node in started:
        with contextlib.suppress(Exception):
            node.stop()
