"""Simulated nodes for bench/capacity.py: one process serving ``--count`` node APIs.

Each is the real node API (``hutch.node.http.app.create_node_app`` with the cluster token)
over the fakes of ``tests/fakes/sandboxes.py`` instead of runc, on a Unix socket of its
own, and registers and beats through the real ``node/membership.Registrar`` with the given
api URLs (``POST /hutch/cluster/nodes``, then heartbeats), exactly as ``hutch node
--register`` does; writes ``<dir>/ready-<first>`` once every registration was answered
(the api reconciles a node before it answers: a create racing that reconcile would be
marked killed). Runs until SIGTERM.

    python bench/_fakenodes.py --first 1 --count 50 --dir D --register URL[,URL] --token T
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

import uvicorn  # noqa: E402

from hutch import __version__  # noqa: E402
from hutch.node.http.app import create_node_app  # noqa: E402
from hutch.node.membership import Registrar  # noqa: E402
from hutch.node.runner import node_api_server  # noqa: E402
from hutch.node.service import NodeIdentity, NodeService  # noqa: E402
from hutch.shared import clusterwire as wire  # noqa: E402
from hutch.shared.nodewire import API_VERSION  # noqa: E402
from tests.fakes.sandboxes import (  # noqa: E402
    FakeSamples,
    FakeSandboxes,
    FakeTemplates,
    FakeVolumeBackend,
)

#: Every simulated node holds this template (bench/capacity.py seeds it).
TEMPLATE = "benchtemplate0000001"


def _node(directory: Path, node_id: str, capacity: int) -> tuple[uvicorn.Server, Path]:
    service = NodeService(
        identity=NodeIdentity(node_id=node_id, version=__version__, runtime="fake",
                              max_sandboxes=capacity, pool_sizes={}),
        sandboxes=FakeSandboxes(capacity=capacity, templates=(TEMPLATE,)),
        sampler=FakeSamples(),
        templates=FakeTemplates(),  # type: ignore[arg-type]  # duck-typed TemplateManager
        volumes={"local": FakeVolumeBackend(directory / f"{node_id}-volumes")},  # type: ignore[dict-item]
    )  # fmt: skip
    sock = directory / f"{node_id}.sock"
    # hutch node's own server (its keep-alive outlasts the api client's pooled connections)
    return node_api_server(create_node_app(service, token=TOKEN), token=TOKEN, uds=sock), sock


TOKEN = ""


async def main(args: argparse.Namespace) -> None:
    global TOKEN
    TOKEN = args.token
    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    servers: list[uvicorn.Server] = []
    registrars: list[Registrar] = []
    tasks: list[asyncio.Task[None]] = []
    for n in range(args.first, args.first + args.count):
        node_id = f"sim-{n:03d}"
        server, sock = _node(directory, node_id, args.capacity)
        servers.append(server)
        tasks.append(asyncio.create_task(server.serve()))

        async def registration(node_id: str = node_id, sock: Path = sock) -> wire.RegisterNode:
            return wire.RegisterNode(
                node_id=node_id, address=f"unix:{sock}", api_version=API_VERSION,
                version=__version__, boot_id=f"bench-{node_id}",
                capacity=wire.Capacity(cpu_count=64, memory_mb=1 << 20, disk_mb=1 << 20,
                                       max_sandboxes=args.capacity),
                templates=[TEMPLATE],
            )  # fmt: skip

        registrars.append(
            Registrar(api_urls=args.register.split(","), token=TOKEN, registration=registration)
        )
    while not all(s.started for s in servers):
        await asyncio.sleep(0.05)
    for registrar in registrars:
        await registrar.register()
        tasks.append(asyncio.create_task(registrar.run()))
    # Every registration answered (its reconcile done): the bench may create now.
    (directory / f"ready-{args.first}").write_text(f"{len(registrars)}\n")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        server.should_exit = True
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for registrar in registrars:
        await registrar.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--first", type=int, default=1)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--capacity", type=int, default=10_000)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--register", required=True)
    parser.add_argument("--token", required=True)
    asyncio.run(main(parser.parse_args()))
