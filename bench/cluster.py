"""Create latency through a real local cluster's edge with 1, 2 and 3 nodes.

Run as root from the repository, after ./install.sh (the ``base`` template):

    .venv/bin/python bench/cluster.py [--n 20] [--nodes 1,2,3] [--concurrency 2]

For each node count, ``hutch cluster up --nodes N --apis 1`` (its own home in /tmp and host
names ``hbc*``, subnets 10.240.N.0/24; no warm pool, so every create boots a sandbox),
then ``--n`` creates through the api, each followed by its first command through the edge
(``create`` is ``Sandbox.create`` alone, ``first cmd`` the edge → node proxy → envd round
trip after it), ``--concurrency`` at a time; then the sandboxes are killed and
``hutch cluster down`` removes everything, also when a step fails. Prints one table.
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
             "--apis", "1", "--names", "hbc", "--subnet", "10.240", "--json"],
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--nodes", default="1,2,3")
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    rows = [run(int(k), args.n, args.concurrency) for k in args.nodes.split(",")]
    print_table(
        f"creates through the edge ({args.concurrency} at a time, base, no warm pool)",
        rows,
        ["nodes", "creates", "create p50 ms", "create p95 ms", "first cmd p50 ms",
         "first cmd p95 ms"],
    )  # fmt: skip


if __name__ == "__main__":
    main()
