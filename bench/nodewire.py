"""The node wire's overhead: create and kill through the node API vs. the direct call.

Run as root from the repository:

    .venv/bin/python bench/nodewire.py [--n 20] [--calls 500]

One node is built in this process (private home, own host names ``hbw*``: bridge ``hbw0``
on 10.216.10.0/24, netns ``hbw-*``, veths ``hbwv*``, nft table ``hbw``, cgroup ``hbw-<pid>``)
and its node API served twice in the same event loop, as ``hutch serve`` does: on a Unix
socket and on TCP loopback, both with a token. Busybox sandboxes (cold: no warm pool) are
created and killed ``--n`` times per path, the paths taking turns so drift hits all three
alike: ``NodeService`` directly, ``HttpNodeClient`` over the socket, and over TCP. Then
``--calls`` bare round trips (``GET /v1/sandboxes`` with one sandbox) give the wire's own
cost per call. Prints a table; removes everything it made, also when a step fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from _table import print_table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from hutch.api.nodes.http_client import HttpNodeClient  # noqa: E402
from hutch.api.service.ports import SandboxSpec  # noqa: E402
from hutch.node.app import build_node, build_node_service  # noqa: E402
from hutch.node.http.app import create_node_app  # noqa: E402
from hutch.node.runner import node_api_server, private_socket  # noqa: E402
from hutch.node.sandbox.models import SandboxRequest  # noqa: E402
from hutch.node.settings import NodeSettings  # noqa: E402
from hutch.node.templates.busybox import build_busybox  # noqa: E402
from hutch.shared.ids import SandboxID, TeamID, TemplateID  # noqa: E402
from tests.e2e.serveproc import HostNames, Serve, nodehelpers  # noqa: E402

NAMES = HostNames(
    bridge="hbw0", subnet="10.216.10.0/24", netns_prefix="hbw-", veth_prefix="hbwv",
    nft_table="hbw", cgroup_parent=f"hbw-{os.getpid()}",
)  # fmt: skip
TOKEN = "bench-token-0123456789abcdef"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _ms(values: list[float]) -> tuple[str, str]:
    return f"{statistics.median(values) * 1000:.1f}", f"{_pct(values, 0.95) * 1000:.1f}"


def _us(values: list[float]) -> tuple[str, str]:
    return f"{statistics.median(values) * 1e6:.0f}", f"{_pct(values, 0.95) * 1e6:.0f}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _timed(call: Callable[[], Awaitable[object]]) -> float:
    t0 = time.perf_counter()
    await call()
    return time.perf_counter() - t0


async def bench(home: Path, *, n: int, calls: int) -> list[list[str]]:
    settings = NodeSettings(
        home=home, bridge=NAMES.bridge, subnet=NAMES.subnet,  # type: ignore[arg-type]
        netns_prefix=NAMES.netns_prefix, veth_prefix=NAMES.veth_prefix,
        nft_table=NAMES.nft_table, cgroup_parent=NAMES.cgroup_parent, manage_ip_forward=False,
        envd_bundle_dir=nodehelpers.cached_envd_bundle(), pool_size="",
        shared_templates_dir=None, envd_ready_timeout_s=120,
    )  # fmt: skip
    node = build_node(settings, build_bundle=False)
    servers = []
    clients: list[HttpNodeClient] = []
    try:
        await node.manager.start()
        service = build_node_service(node, settings, node_id="bench")
        app = create_node_app(service, token=TOKEN)
        sock = private_socket(home)
        port = _free_port()
        for kw in ({"uds": sock}, {"host": "127.0.0.1", "port": port}):
            server = node_api_server(app, token=TOKEN, **kw)  # type: ignore[arg-type]
            servers.append((server, asyncio.create_task(server.serve())))
        while not all(s.started for s, _ in servers):
            await asyncio.sleep(0.01)
        uds = await HttpNodeClient.connect(
            "http://node", token=TOKEN, transport=httpx.AsyncHTTPTransport(uds=str(sock))
        )
        tcp = await HttpNodeClient.connect(f"http://127.0.0.1:{port}", token=TOKEN)
        clients = [uds, tcp]

        def spec(sid: str) -> SandboxSpec:
            return SandboxSpec(
                sandbox_id=SandboxID(sid), team_id=TeamID("bench"),
                template_id=TemplateID("busybox"), cpu_count=1, memory_mb=128, disk_mb=512,
            )  # fmt: skip

        def direct_create(sid: str) -> Callable[[], Awaitable[object]]:
            request = SandboxRequest(sandbox_id=sid, template="busybox", cpu_count=1, memory_mb=128)
            return lambda: service.create(request)

        paths: dict[str, tuple[Callable[[str], Callable[[], Awaitable[object]]],
                               Callable[[str], Awaitable[object]]]] = {
            "direct (NodeService)": (direct_create, service.kill),
            "wire, Unix socket": (lambda s: lambda: uds.create(spec(s)),
                                  lambda s: uds.kill(SandboxID(s))),
            "wire, TCP loopback": (lambda s: lambda: tcp.create(spec(s)),
                                   lambda s: tcp.kill(SandboxID(s))),
        }  # fmt: skip
        creates: dict[str, list[float]] = {name: [] for name in paths}
        kills: dict[str, list[float]] = {name: [] for name in paths}
        # One of each first, unmeasured: the template's page cache, the connections.
        for i in range(n + 1):
            for j, (name, (create, kill)) in enumerate(paths.items()):
                sid = f"bw{i:03d}p{j}"
                took_create = await _timed(create(sid))
                took_kill = await _timed(lambda k=kill, s=sid: k(s))
                if i:
                    creates[name].append(took_create)
                    kills[name].append(took_kill)
        rows = [[name, "create", *_ms(creates[name]), "ms"] for name in paths] + [
            [name, "kill", *_ms(kills[name]), "ms"] for name in paths
        ]

        await service.create(SandboxRequest(sandbox_id="bwlist", template="busybox"))
        bare: dict[str, list[float]] = {"direct (NodeService)": [], "wire, Unix socket": [],
                                        "wire, TCP loopback": []}  # fmt: skip

        async def direct_list() -> object:
            return service.list()

        for _ in range(calls):
            bare["direct (NodeService)"].append(await _timed(direct_list))
            bare["wire, Unix socket"].append(await _timed(uds.list_running))
            bare["wire, TCP loopback"].append(await _timed(tcp.list_running))
        await service.kill("bwlist")
        rows += [[name, "list (1 sandbox)", *_us(v), "µs"] for name, v in bare.items()]
        return rows
    finally:
        for client in clients:
            await client.aclose()
        for server, task in servers:
            server.should_exit = True
            with contextlib.suppress(Exception):
                await task
        with contextlib.suppress(Exception):
            await node.manager.reconcile([])
        await node.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20, help="creates and kills per path")
    parser.add_argument("--calls", type=int, default=500, help="bare round trips per path")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="hbw-"))
    helper = Serve(home=home, envd_bundle=nodehelpers.cached_envd_bundle(), names=NAMES)
    try:
        build_busybox(home / "templates")
        rows = asyncio.run(bench(home, n=args.n, calls=args.calls))
    finally:
        helper.destroy_everything()
        shutil.rmtree(home, ignore_errors=True)
    print_table(
        f"node wire overhead: busybox, cold creates, {args.n} per path, "
        f"{args.calls} bare calls per path",
        rows,
        ["path", "operation", "p50", "p95", "unit"],
    )


if __name__ == "__main__":
    main()
