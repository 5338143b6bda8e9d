"""What a sandbox's own disk (ADR 0023) costs at create and kill, beside the runc floor.

Run as root from the repository (one command, one table):

    .venv/bin/python bench/disk.py [-n 10] [--disk-mb 1024]

It builds a node of its own (private home, busybox template, its own host names ``hbd*``:
bridge ``hbd0`` on 10.216.11.0/24, netns ``hbd-*``, veths ``hbdv*``, nft table ``hbd``,
cgroup parent ``hbd-<pid>``) and measures, in the same run: ``runc create`` + ``start`` of a
bare container (the floor), the disk step alone (fallocate + mkfs.ext4 + loop + mount),
cold creates to a ready envd with the disk and without it (the upper layer a plain
directory on the node's filesystem, as before ADR 0023), kills both ways, and a create
that takes a warm pool member (its disk made when the member booted). Everything it
started is removed, and leaks are checked.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests" / "integration" / "node"))

from _table import print_table
from nodehelpers import cached_envd_bundle, node_settings
from serve import bench_runc_floor

from hutch.node import disk, rootfs
from hutch.node.adapters import OverlayRootfs
from hutch.node.app import build_node
from hutch.node.rootfs import upper_dir
from hutch.node.sandbox import SandboxRequest
from hutch.node.templates.busybox import build_busybox

CGROUP_PARENT = f"hbd-{os.getpid()}"
NAMES = {
    "bridge": "hbd0",
    "subnet": "10.216.11.0/24",
    "netns_prefix": "hbd-",
    "veth_prefix": "hbdv",
    "nft_table": "hbd",
    "cgroup_parent": CGROUP_PARENT,
}


class PlainUpperRootfs(OverlayRootfs):
    """The upper layer as a plain directory on the node's disk: no limit (before ADR 0023)."""

    def prepare(self, sandbox_dir: Path, *, disk_mb: int) -> Path:
        upper = upper_dir(sandbox_dir)
        upper.mkdir(mode=0o755, parents=True)
        return upper


def _ms(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"{statistics.median(values) * 1000:.1f} ms / {p95 * 1000:.1f} ms"


async def _timed(fn: Callable[[], Awaitable[object]]) -> float:
    t0 = time.perf_counter()
    await fn()
    return time.perf_counter() - t0


async def run(n: int, disk_mb: int) -> list[tuple[str, str]]:
    home = Path(tempfile.mkdtemp(prefix="hbd-"))
    build_busybox(home / "templates")
    rows = [(label.removesuffix(" p50 / p95"), value) for label, value in bench_runc_floor(home, n)]
    settings = node_settings(home, cached_envd_bundle(), **NAMES, default_disk_mb=disk_mb,
                             pool_size="")  # fmt: skip
    node = build_node(settings, build_bundle=False)
    manager = node.manager
    await manager.start()
    try:
        step = home / "disk-step"
        steps = []
        for _ in range(n):
            step.mkdir()
            steps.append(await _timed(lambda: asyncio.to_thread(
                disk.create_disk, step, size_mb=disk_mb)))  # fmt: skip
            disk.remove_disk(step)
            step.rmdir()
        rows.append((f"disk step alone ({disk_mb} MiB: fallocate, mkfs, loop, mount)", _ms(steps)))

        # Alternated, so both see the same noise of a shared machine.
        variants = {
            "with the disk": OverlayRootfs(),
            "without (plain upper dir)": PlainUpperRootfs(),
        }
        creates: dict[str, list[float]] = {label: [] for label in variants}
        kills: dict[str, list[float]] = {label: [] for label in variants}
        for _ in range(n):
            for label, layer in variants.items():
                manager._host.rootfs = layer
                sid = f"hbd{uuid.uuid4().hex[:10]}"
                req = SandboxRequest(sandbox_id=sid, template="busybox")
                creates[label].append(await _timed(lambda req=req: manager.create(req)))
                kills[label].append(await _timed(lambda sid=sid: manager.kill(sid)))
        for label in variants:
            rows.append((f"cold create to ready envd, {label}", _ms(creates[label])))
        for label in variants:
            rows.append((f"kill, {label}", _ms(kills[label])))
        manager._host.rootfs = OverlayRootfs()

        object.__setattr__(manager.config, "pool_sizes", {"busybox": 1})
        await manager.start_pool()
        pooled = []
        for _ in range(n):
            for _ in range(600):  # until the member is booted (a count, not a deadline)
                if manager.pool_members():
                    break
                await asyncio.sleep(0.05)
            sid = f"hbd{uuid.uuid4().hex[:10]}"
            req = SandboxRequest(sandbox_id=sid, template="busybox")
            pooled.append(await _timed(lambda req=req: manager.create(req)))
            assert manager.get(sid).host_id.startswith("pool-")
            await manager.kill(sid)
        rows.append(("create from the warm pool, with the disk", _ms(pooled)))
    finally:
        try:
            await manager.stop_pool()
        finally:
            await manager.reconcile([])
        # Its own names only (the node tests' leak counter matches their fixed prefixes).
        leaks = {
            "mounts": rootfs.find_mounts_under(home),
            "loop devices": disk.loop_devices_under(home),
            "containers": await manager._runtime.list(),
            "sandbox dirs": list(settings.sandboxes_dir.iterdir()),
        }
        await node.networks.remove_bridge()
        await node.aclose()
        for parent in Path("/sys/fs/cgroup").glob(f"*/{CGROUP_PARENT}"):
            with contextlib.suppress(OSError):
                parent.rmdir()
        shutil.rmtree(home, ignore_errors=True)
    assert not any(leaks.values()), leaks
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10, help="repetitions of each (default 10)")
    parser.add_argument("--disk-mb", type=int, default=1024, help="the disk's size (1024)")
    args = parser.parse_args()
    rows = asyncio.run(run(args.n, args.disk_mb))
    print_table(
        f"sandbox disk (ADR 0023), busybox, n={args.n}: median / p95", rows, ("what", "time")
    )


if __name__ == "__main__":
    main()
