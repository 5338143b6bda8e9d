"""Measure create-to-ready and idle memory of busybox sandboxes (run as root, by hand).

    .venv/bin/python tests/integration/node/measure_node.py [N]

Sequential creates on real runc; prints the median and per-phase medians, then the memory
cgroup usage of each sandbox after it has idled, then kills everything and checks leaks.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import contextlib

from nodehelpers import cached_envd_bundle, cgroup_parents, count_leaks, node_settings

from hutch.node.app import build_node
from hutch.node.sandbox import SandboxRequest
from hutch.node.templates.busybox import build_busybox

PHASES: dict[str, list[float]] = defaultdict(list)


def timed(obj: object, name: str, label: str) -> None:
    original = getattr(obj, name)

    async def wrapper(*args: object, **kwargs: object) -> object:
        t0 = time.perf_counter()
        try:
            return await original(*args, **kwargs)
        finally:
            PHASES[label].append(time.perf_counter() - t0)

    setattr(obj, name, wrapper)


async def main(n: int) -> None:
    home = Path(tempfile.mkdtemp(prefix="hsm-measure-"))
    build_busybox(home / "templates")
    settings = node_settings(home, cached_envd_bundle())
    node = build_node(settings, build_bundle=False)
    manager = node.manager
    await manager.start()
    rt = manager._runtime
    timed(node.networks, "setup", "network setup")
    timed(rt, "create", "runc create")
    timed(rt, "start", "runc start")
    timed(manager._host, "wait_healthy", "start -> envd healthy")
    timed(node.envd, "init", "envd /init")
    totals, ids = [], []
    try:
        for _ in range(n):
            sid = f"hsm-{uuid.uuid4().hex[:12]}"
            t0 = time.perf_counter()
            await manager.create(SandboxRequest(sandbox_id=sid, template="busybox"))
            totals.append(time.perf_counter() - t0)
            ids.append(sid)
        print(
            f"create-to-ready over {n}: median {statistics.median(totals) * 1000:.0f} ms, "
            f"min {min(totals) * 1000:.0f}, max {max(totals) * 1000:.0f}"
        )
        for label, values in PHASES.items():
            print(f"  {label:24s} median {statistics.median(values) * 1000:7.1f} ms")
        await asyncio.sleep(5)  # let envd settle into idle
        usage = []
        for sid in ids:
            memory = next(p / sid for p in cgroup_parents() if p.parts[4] == "memory")
            stat = dict(line.split() for line in (memory / "memory.stat").read_text().splitlines())
            usage.append((int((memory / "memory.usage_in_bytes").read_text()),
                          int(stat["total_rss"]), int(stat["total_cache"])))  # fmt: skip
        mib = 1024 * 1024
        print(
            f"idle memory per sandbox (cgroup usage): median "
            f"{statistics.median(u[0] for u in usage) / mib:.1f} MiB "
            f"(rss {statistics.median(u[1] for u in usage) / mib:.1f} MiB, "
            f"page cache {statistics.median(u[2] for u in usage) / mib:.1f} MiB)"
        )
    finally:
        await manager.reconcile([])
        print("leaks after kill:", await count_leaks(settings, rt))
        await node.networks.remove_bridge()
        await node.aclose()
        for parent in cgroup_parents():
            with contextlib.suppress(OSError):
                parent.rmdir()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 10))
