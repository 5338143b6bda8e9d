"""hutch lifecycle benchmark: pause/resume, snapshots, fork, metadata PATCH under contention.

Run as root from the repository:

    .venv/bin/python bench/lifecycle.py [--template base] [-n 10] [--dirty-mb 256]

It starts its own ``hutch serve`` (private home, free loopback ports, own bridge and names,
no warm pool: see ``bench/_instance.py``), drives it with the official ``e2b`` SDK (plain
HTTP for the metadata PATCH, which the SDK has no method for), prints a table (median /
p95 over ``-n`` repetitions unless said otherwise), and removes everything it started.
Numbers go to docs/pause.md.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import _instance
import httpx
from _instance import new_instance
from _table import print_table

from hutch.node.runtime.procmount import bind_over
from hutch.node.templates.busybox import build_busybox

SYSTEM_BASE = Path("/var/lib/hutch/templates/base")
# Touches one byte per page of a bytearray: every page dirty and resident, then idles.
DIRTY = (
    "python3 -c 'import time; b = bytearray({mb} << 20); "
    '[b.__setitem__(i, 1) for i in range(0, len(b), 4096)]; open("/tmp/dirty", "w").close(); '
    "time.sleep(86400)'"
)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f} ms / {_pct(values, 0.95) * 1000:.0f} ms"


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_pause_resume(template: str, n: int, label: str, prepare: Callable[..., None]) -> list:
    """pause() and connect() of one sandbox, ``n`` cycles, memory kept (runc freezer)."""
    from e2b import Sandbox

    sbx = Sandbox.create(template, timeout=600)
    try:
        prepare(sbx)
        resident = _instance.cgroup_usage_bytes(sbx.sandbox_id)
        pauses, resumes, first = [], [], []
        for _ in range(n):
            pauses.append(_timed(sbx.pause))
            resumes.append(_timed(lambda: Sandbox.connect(sbx.sandbox_id, timeout=600)))
            first.append(_timed(lambda: sbx.commands.run("true")))
        held = "?" if resident is None else f"{resident / 2**20:.0f} MiB"
        return [
            (f"sandbox memory (cgroup), {label}", held),
            (f"pause, {label} (memory kept)", _ms(pauses)),
            (f"resume (connect), {label} (memory kept)", _ms(resumes)),
            (f"first command after resume, {label}", _ms(first)),
        ]
    finally:
        sbx.kill()


def bench_filesystem_resume(template: str, n: int) -> list:
    """pause(mode="filesystem") and connect(): the files-only path (a reboot)."""
    from e2b import Sandbox

    sbx = Sandbox.create(template, timeout=600)
    try:
        pauses, resumes = [], []
        for _ in range(n):
            pauses.append(_timed(lambda: sbx.pause(mode="filesystem")))
            resumes.append(_timed(lambda: Sandbox.connect(sbx.sandbox_id, timeout=600)))
        return [
            ("pause, files only (container deleted)", _ms(pauses)),
            ("resume, files only (reboot + envd /init)", _ms(resumes)),
        ]
    finally:
        sbx.kill()


def dirty(mb: int) -> Callable[..., None]:
    def prepare(sbx: object) -> None:
        sbx.commands.run(DIRTY.format(mb=mb), background=True, timeout=0)  # type: ignore[attr-defined]
        deadline = time.monotonic() + 120
        while sbx.commands.run("test -e /tmp/dirty && echo y || true").stdout != "y\n":  # type: ignore[attr-defined]
            if time.monotonic() > deadline:
                raise RuntimeError("the dirty-memory process did not start")
            time.sleep(0.2)

    return prepare


def bench_snapshots(template: str, n: int, file_mb: int) -> list:
    """create_snapshot() (small change, and ``file_mb`` of new files), create from it, fork."""
    from e2b import Sandbox

    sbx = Sandbox.create(template, timeout=600)
    made: list[Sandbox] = []
    snaps: list[str] = []
    try:
        sbx.commands.run("echo hi > /tmp/small", user="root")
        small = []
        for _ in range(n):
            t0 = time.perf_counter()
            snaps.append(sbx.create_snapshot().snapshot_id)
            small.append(time.perf_counter() - t0)
        sbx.commands.run(f"dd if=/dev/urandom of=/tmp/big bs=1M count={file_mb} 2>/dev/null",
                         user="root", timeout=300)  # fmt: skip
        big = []
        for _ in range(max(3, n // 3)):
            t0 = time.perf_counter()
            snaps.append(sbx.create_snapshot().snapshot_id)
            big.append(time.perf_counter() - t0)
        from_snap, cold = [], []
        for _ in range(n):
            t0 = time.perf_counter()
            made.append(Sandbox.create(snaps[-1], timeout=120))
            from_snap.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            made.append(Sandbox.create(template, timeout=120))
            cold.append(time.perf_counter() - t0)
            for s in made[-2:]:
                s.kill()
        forks = []
        for count in (1, 4):
            t0 = time.perf_counter()
            results = sbx.fork(count=count, timeout=120)
            forks.append((count, time.perf_counter() - t0))
            made += [r for r in results if isinstance(r, Sandbox)]
            for s in made[-count:]:
                s.kill()
            snaps += [s.snapshot_id for s in Sandbox.list_snapshots(sandbox_id=sbx.sandbox_id)
                      .next_items() if s.snapshot_id not in snaps]  # fmt: skip
        rows = [
            ("create_snapshot, small change (files only)", _ms(small)),
            (f"create_snapshot, {file_mb} MB of new files", _ms(big)),
            (f"Sandbox.create(snapshot) ({file_mb} MB layer)", _ms(from_snap)),
            (f"Sandbox.create({template!r}) cold, same run", _ms(cold)),
        ]
        rows += [(f"fork(count={c}) (one snapshot + {c} creates)", f"{t * 1000:.0f} ms")
                 for c, t in forks]  # fmt: skip
        return rows
    finally:
        for s in [sbx, *made]:
            with contextlib.suppress(Exception):  # best effort cleanup
                s.kill()
        for snap in set(snaps):
            Sandbox.delete_snapshot(snap)


def bench_boot_id_mount(home: Path, template: str, n: int) -> list:
    """The boot-id mount's own cost: the helper process, measured on a running sandbox."""
    from e2b import Sandbox

    sbx = Sandbox.create(template, timeout=600)
    try:
        sbx.commands.run("touch /tmp/target", user="root")
        record = json.loads((home / "sandboxes" / sbx.sandbox_id / "sandbox.json").read_text())
        source = home / "sandboxes" / sbx.sandbox_id / "boot_id"
        times = [
            _timed(lambda: asyncio.run(bind_over(record["pid"], source, "/tmp/target")))
            for _ in range(n)
        ]
        return [("boot-id mount helper (per boot)", _ms(times))]
    finally:
        sbx.kill()


def bench_patch(api_url: str, key: str, template: str, clients: int, each: int) -> list:
    """Metadata PATCH latency: one client, then ``clients`` at once on one sandbox."""
    from e2b import Sandbox

    sbx = Sandbox.create(template, timeout=600)
    url = f"{api_url}/sandboxes/{sbx.sandbox_id}/metadata"
    headers = {"X-API-Key": key}
    try:
        with httpx.Client(headers=headers, timeout=60) as c:
            alone = [_timed(lambda i=i: c.patch(url, json={"solo": str(i)}).raise_for_status())
                     for i in range(each * 2)]  # fmt: skip

        def client(k: int) -> list[float]:
            with httpx.Client(headers=headers, timeout=60) as c:
                return [
                    _timed(lambda i=i: c.patch(url, json={f"c{k}": str(i)}).raise_for_status())
                    for i in range(each)
                ]

        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            lat = [x for xs in pool.map(client, range(clients)) for x in xs]
        wall = time.perf_counter() - t0
        final = sbx.get_info().metadata
        assert all(final.get(f"c{k}") == str(each - 1) for k in range(clients)), final
        return [
            ("metadata PATCH, 1 client", _ms(alone)),
            (f"metadata PATCH, {clients} concurrent clients", _ms(lat)),
            (f"metadata PATCH throughput, {clients} clients", f"{len(lat) / wall:.0f} /s"),
        ]
    finally:
        sbx.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--template", default="base" if SYSTEM_BASE.is_dir() else "busybox")
    parser.add_argument("-n", type=int, default=10, help="repetitions per measure")
    parser.add_argument("--dirty-mb", type=int, default=256)
    parser.add_argument("--file-mb", type=int, default=256)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--patches", type=int, default=25, help="PATCHes per client")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/lifecycle.py needs root (runc, network namespaces)")
    home = Path(tempfile.mkdtemp(prefix="hutch-bench-lifecycle-", dir="/var/tmp"))
    build_busybox(home / "templates")
    if args.template == "base":
        (home / "templates" / "base").symlink_to(SYSTEM_BASE)
    inst = new_instance(home=home, extra_env={"HUTCH_NODE_POOL_SIZE": ""})
    rows: list[tuple[str, str]] = []
    try:
        key = inst.hutch("keys", "create").strip()
        os.environ.update(
            E2B_API_URL=inst.api_url, E2B_SANDBOX_URL=inst.sandbox_url, E2B_API_KEY=key
        )
        for k in [k for k in os.environ if "proxy" in k.lower()]:
            del os.environ[k]
        inst.start()
        rows += bench_pause_resume(args.template, args.n, "idle", lambda sbx: None)
        if args.template == "base":
            rows += bench_pause_resume(
                args.template, args.n, f"{args.dirty_mb} MB dirty", dirty(args.dirty_mb)
            )
        rows += bench_filesystem_resume(args.template, args.n)
        rows += bench_snapshots(args.template, args.n, args.file_mb)
        rows += bench_patch(inst.api_url, key, args.template, args.clients, args.patches)
        rows += bench_boot_id_mount(home, args.template, args.n)
    finally:
        inst.stop()
        inst.destroy_everything()
        _instance.remove_home(home)

    print_table(
        f"hutch lifecycle on this machine ({os.cpu_count()} CPUs, runc), template "
        f"{args.template}, median / p95 over {args.n}",
        rows,
        ("measure", "value"),
    )


if __name__ == "__main__":
    main()
