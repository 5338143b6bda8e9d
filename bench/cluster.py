"""Create latency through a real local cluster's edge with 1, 2 and 3 nodes.

Run as root from the repository, after ./install.sh (the ``base`` template):

    .venv/bin/python bench/cluster.py [--n 20] [--nodes 1,2,3] [--concurrency 2]

For each node count, ``hutch cluster up --nodes N --apis 1`` (its own home in /tmp and host
names ``hbc*``, subnets 10.250.N.0/24, apart from tests/cluster/test_faults.py's 10.240-249;
no warm pool, so every create boots a sandbox),
then ``--n`` creates through the api, each followed by its first command through the edge
(``create`` is ``Sandbox.create`` alone, ``first cmd`` the edge → node proxy → envd round
trip after it), ``--concurrency`` at a time; then the sandboxes are killed and
``hutch cluster down`` removes everything, also when a step fails. Prints one table.

``--fetch-mib M`` (with ``--nodes ""`` alone) measures a template fetch between two nodes
(ADR 0029) instead: a sealed artifact of M MiB in one home, served by the real node API
routes (uvicorn on TCP loopback, the token), pulled by the real ``Fetcher`` into another
home; the first fetch includes the source's digest pass, the second (a fresh receiver)
finds it kept. Needs no cluster and no root.

The control plane's own capacity (api + PostgreSQL with 10 and 100 simulated nodes) is
bench/capacity.py.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _table import print_table
from e2b import Sandbox

HUTCH = [sys.executable, "-m", "hutch"]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _one(sdk: dict[str, str]) -> tuple[float, float, Sandbox]:
    t0 = time.perf_counter()
    sbx = Sandbox.create("base", timeout=300, **sdk)
    t1 = time.perf_counter()
    sbx.commands.run("true")
    return t1 - t0, time.perf_counter() - t1, sbx


def run(nodes: int, n: int, concurrency: int) -> list[str]:
    home = Path(tempfile.mkdtemp(prefix="hutch-bc-"))
    try:
        up = subprocess.run(
            [*HUTCH, "cluster", "up", "--home", str(home), "--nodes", str(nodes),
             "--apis", "1", "--names", "hbc", "--subnet", "10.250", "--json"],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if up.returncode != 0:
            raise SystemExit(f"cluster up failed: {up.stderr}")
        env = json.loads(up.stdout)["env"]
        sdk = {"api_key": env["E2B_API_KEY"], "api_url": env["E2B_API_URL"],
               "sandbox_url": env["E2B_SANDBOX_URL"]}  # fmt: skip
        _one(sdk)[2].kill()  # warm the page cache and the processes' imports
        creates, firsts, made = [], [], []
        with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
            for create, first, sbx in pool.map(lambda _: _one(sdk), range(n)):
                creates.append(create)
                firsts.append(first)
                made.append(sbx)
        for sbx in made:
            sbx.kill()
        ms = [f"{1000 * v:.0f}" for v in (
            statistics.median(creates), _pct(creates, 0.95),
            statistics.median(firsts), _pct(firsts, 0.95))]  # fmt: skip
        return [str(nodes), str(n), *ms]
    finally:
        if home.exists():
            subprocess.run([*HUTCH, "cluster", "down", "--home", str(home)], timeout=600)
        shutil.rmtree(home, ignore_errors=True)


def fetch_throughput(mib: int) -> list[list[str]]:
    """Rows of ``[fetch, MiB, seconds, MiB/s]`` for a cold and a warm fetch of ``mib`` MiB."""
    import asyncio
    import json as _json
    import os
    import socket
    import threading
    from types import SimpleNamespace

    import uvicorn
    from starlette.applications import Starlette
    from starlette.middleware import Middleware

    from hutch.node.http import routes_artifacts
    from hutch.node.http.auth import BearerAuth
    from hutch.node.http.errors import EXCEPTION_HANDLERS
    from hutch.node.templates.artifact import DirTemplateStore
    from hutch.node.templates.transfer import Exporter, Fetcher

    work = Path(tempfile.mkdtemp(prefix="hutch-bench-fetch-"))
    try:
        src = work / "a"
        rootfs = src / ".artifacts" / ("b" * 64) / "rootfs"
        rootfs.mkdir(parents=True)
        chunk = os.urandom(1 << 20)
        for i in range(mib):  # 1 MiB files, like a tree's many small-to-mid files
            (rootfs / f"f{i:05d}").write_bytes(chunk)
        (rootfs.parent / "artifact.json").write_text("{}")
        (src / "img").mkdir()
        (src / "img" / "template.json").write_text(_json.dumps({
            "format": 1, "name": "img", "default_user": "user", "workdir": "/", "env": {},
            "cpu_count": 1.0, "memory_mb": 256, "build": {}, "image": None,
            "artifact": "b" * 64, "layers": [],
        }))  # fmt: skip
        app = Starlette(routes=routes_artifacts.ROUTES,
                        middleware=[Middleware(BearerAuth, token="bench")],
                        exception_handlers=dict(EXCEPTION_HANDLERS))  # fmt: skip
        app.state.node = SimpleNamespace(exporter=Exporter(DirTemplateStore(src), src))
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                               log_level="warning", lifespan="off"))  # fmt: skip
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.01)
        rows = []
        try:
            for label in ("cold (digest computed)", "warm (digest kept)"):
                dest = work / f"b-{len(rows)}"
                dest.mkdir()
                fetcher = Fetcher(DirTemplateStore(dest), dest, token="bench")
                t0 = time.perf_counter()
                asyncio.run(fetcher.ensure("img", [f"http://127.0.0.1:{port}"]))
                took = time.perf_counter() - t0
                rows.append([label, str(mib), f"{took:.2f}", f"{mib / took:.0f}"])
                shutil.rmtree(dest)
        finally:
            server.should_exit = True
            thread.join(10)
        return rows
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--nodes", default="1,2,3")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--fetch-mib", type=int, default=0)
    args = parser.parse_args()
    if args.fetch_mib:
        print_table(
            "template fetch node to node over the node API (TCP loopback, ADR 0029)",
            fetch_throughput(args.fetch_mib), ["fetch", "MiB", "s", "MiB/s"],
        )  # fmt: skip
    if not args.nodes:
        return
    rows = [run(int(k), args.n, args.concurrency) for k in args.nodes.split(",")]
    print_table(
        f"creates through the edge ({args.concurrency} at a time, base, no warm pool)",
        rows,
        ["nodes", "creates", "create p50 ms", "create p95 ms", "first cmd p50 ms",
         "first cmd p95 ms"],
    )  # fmt: skip


if __name__ == "__main__":
    main()
