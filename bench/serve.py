"""hutch serve benchmark: create latency, command round trips, kill, memory, density.

Run as root from the repository:

    .venv/bin/python bench/serve.py [--template base] [--pool-size N] [--fit-cap 200]

It starts its own ``hutch serve`` (private home, free loopback ports, own bridge and names:
see ``bench/_instance.py``), creates an API key, drives it with the official ``e2b`` SDK,
prints a table, and removes everything it started (sandboxes, netns, veths, cgroups, nft
table, bridge, home), also when a measurement fails. ``--pool-size`` sets the warm pool of
``--template`` (``HUTCH_NODE_POOL_SIZE``) so the same command measures both.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import _instance
from _instance import new_instance
from _table import print_table

from hutch.node.settings import NodeSettings
from hutch.node.templates.busybox import build_busybox

SYSTEM_BASE = Path("/var/lib/hutch/templates/base")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f} ms / {_pct(values, 0.95) * 1000:.0f} ms"


def _timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def pool_target(template: str, pool_size: int | None) -> int:
    """The warm pool size serve keeps for ``template`` (its default when not given)."""
    if pool_size is not None:
        return pool_size
    return NodeSettings(home=Path("/nonexistent")).pool_sizes.get(template, 0)


def wait_for_pool(home: Path, size: int, settle: float, timeout: float = 60) -> None:
    """Until ``size`` idle members are ready (serve logs each), then a moment of quiet."""
    deadline = time.monotonic() + timeout
    root = home / "sandboxes"
    while size and time.monotonic() < deadline:
        log = (home / "serve.log").read_text(errors="replace")
        idle = [d.name for d in root.glob("pool-*") if not (d / "sandbox.json").exists()]
        if sum(f"member {m} ready" in log for m in idle) >= size:
            break
        time.sleep(0.05)
    time.sleep(min(settle, 0.5))


def _mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def bench_settled(template: str, n: int, ready: Callable[[], None]) -> list[tuple[str, str]]:
    """Creates on a quiet node: before each, the pool is full again (``ready`` waits)."""
    from e2b import Sandbox

    creates = []
    for _ in range(n):
        ready()
        seconds, sbx = _timed(lambda: Sandbox.create(template, timeout=120))
        creates.append(seconds)
        sbx.kill()  # type: ignore[attr-defined]
    return [(f"Sandbox.create() to ready, quiet node (pool refilled; n={n}) p50 / p95",
             _ms(creates))]  # fmt: skip


def bench_sequential(template: str, n: int, runs: int) -> list[tuple[str, str]]:
    """Back to back: create, first command, ``runs`` more, kill; the next at once."""
    from e2b import Sandbox

    creates, firsts, rtts, kills = [], [], [], []
    for _ in range(n):
        seconds, sbx = _timed(lambda: Sandbox.create(template, timeout=120))
        creates.append(seconds)
        run = sbx.commands.run  # type: ignore[attr-defined]
        seconds, result = _timed(lambda run=run: run("true"))
        assert result.exit_code == 0  # type: ignore[attr-defined]
        firsts.append(seconds)
        for _ in range(runs):
            rtts.append(_timed(lambda run=run: run("true"))[0])
        kills.append(_timed(sbx.kill)[0])  # type: ignore[attr-defined]
    return [
        (f"Sandbox.create() to ready, back to back (n={n}) p50 / p95", _ms(creates)),
        ('first commands.run("true") after create p50 / p95', _ms(firsts)),
        (f'commands.run("true") round trip (n={len(rtts)}) p50 / p95', _ms(rtts)),
        ("sbx.kill() p50 / p95", _ms(kills)),
    ]


def bench_concurrent(
    template: str, concurrency: int, rounds: int, settle: float
) -> list[tuple[str, str]]:
    from e2b import Sandbox

    creates: list[float] = []
    walls: list[float] = []
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        for _ in range(rounds):
            time.sleep(settle)
            t0 = time.perf_counter()
            results = list(
                pool.map(
                    lambda _: _timed(lambda: Sandbox.create(template, timeout=120)),
                    range(concurrency),
                )
            )
            walls.append(time.perf_counter() - t0)
            creates += [seconds for seconds, _ in results]
            list(pool.map(lambda r: r[1].kill(), results))
    return [
        (
            f"Sandbox.create() to ready, concurrency {concurrency} (n={len(creates)}) p50 / p95",
            _ms(creates),
        ),
        (
            f"{concurrency} concurrent creates, wall time median",
            f"{statistics.median(walls) * 1000:.0f} ms",
        ),
    ]


def bench_idle_memory(template: str, count: int) -> list[tuple[str, str]]:
    from e2b import Sandbox

    sandboxes = [Sandbox.create(template, timeout=300) for _ in range(count)]
    try:
        for sbx in sandboxes:
            sbx.commands.run("true")
        time.sleep(5)  # let envd settle into idle
        usage = [_instance.cgroup_usage_bytes(h) for h in _sandbox_cgroups()]
        values = [u for u in usage if u is not None]
    finally:
        for sbx in sandboxes:
            sbx.kill()
    mib = 2**20
    return [
        (
            f"idle memory per {template} sandbox (memory cgroup, envd + tini; median of "
            f"{len(values)} cgroups)",
            f"{statistics.median(values) / mib:.1f} MiB",
        )
    ]


def _sandbox_cgroups() -> list[str]:
    saved = _instance.nodehelpers.CGROUP_PARENT
    _instance.nodehelpers.CGROUP_PARENT = _instance.CGROUP_PARENT
    try:
        for parent in _instance.nodehelpers.cgroup_parents():
            if parent.parts[4] == "memory" or (parent / "memory.current").exists():
                return [c.name for c in parent.iterdir() if c.is_dir()]
    finally:
        _instance.nodehelpers.CGROUP_PARENT = saved
    return []


def bench_fit(cap: int, reserve_bytes: int) -> list[tuple[str, str]]:
    """Create idle busybox sandboxes (4 at a time) until ``cap``, a failure, or low memory."""
    from e2b import Sandbox

    made: list = []
    failure = ""
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        while len(made) < cap and not failure:
            if _mem_available() < reserve_bytes:
                failure = f"stopped: MemAvailable below {reserve_bytes >> 30} GiB"
                break
            batch = min(4, cap - len(made))
            futures = [pool.submit(Sandbox.create, "busybox", timeout=600) for _ in range(batch)]
            for fut in futures:
                try:
                    made.append(fut.result())
                except Exception as exc:  # the first failure ends the test
                    failure = f"first failure: {type(exc).__name__}: {str(exc)[:80]}"
        seconds = time.perf_counter() - t0
        alive = 0
        for sbx in made[:: max(1, len(made) // 10)]:  # spot-check that they still answer
            alive += sbx.commands.run("true").exit_code == 0
        list(pool.map(lambda s: s.kill(), made))
    why = failure or f"cap {cap} reached"
    return [
        (
            f"idle busybox sandboxes that fit ({why})",
            f"{len(made)} (created in {seconds:.0f} s; spot checks answered: {alive})",
        )
    ]


def _run_timed(argv: list[str], stdio: object = subprocess.DEVNULL) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, stdin=stdio, stdout=stdio, stderr=stdio, check=True)  # type: ignore[arg-type]
    return time.perf_counter() - t0


def bench_runc_floor(home: Path, n: int) -> list[tuple[str, str]]:
    """``runc create`` + ``runc start`` of a trivial busybox container (no network, no envd)."""
    bundle = home / "floor"
    bundle.mkdir()
    root = home / "floor-runc"
    subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True)
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["/bin/sleep", "1000"]
    spec["root"] = {"path": str(home / "templates" / "busybox" / "rootfs"), "readonly": True}
    (bundle / "config.json").write_text(json.dumps(spec))
    creates, starts, deletes = [], [], []
    runc = ["runc", "--root", str(root)]
    for i in range(n):
        cid = f"hbn-floor-{i}"
        spec["linux"]["cgroupsPath"] = f"{_instance.CGROUP_PARENT}/{cid}"
        (bundle / "config.json").write_text(json.dumps(spec))
        with open(os.devnull, "r+b") as null:
            # runc create hands its stdio to the container: never a pipe (HOST-NOTES).
            creates.append(_run_timed([*runc, "create", "--bundle", str(bundle), cid], null))
        try:
            starts.append(_run_timed([*runc, "start", cid]))
        finally:
            subprocess.run([*runc, "kill", cid, "KILL"], check=False, capture_output=True)
            deletes.append(_run_timed([*runc, "delete", "--force", cid]))
    both = [c + s for c, s in zip(creates, starts, strict=True)]
    return [
        (f"floor: runc create + start, trivial busybox container (n={n}) p50 / p95", _ms(both)),
        (
            "floor: runc create p50 / runc start p50",
            f"{statistics.median(creates) * 1000:.0f} ms / "
            f"{statistics.median(starts) * 1000:.0f} ms",
        ),
        ("floor: runc delete --force p50", f"{statistics.median(deletes) * 1000:.0f} ms"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--template",
        default="base" if SYSTEM_BASE.is_dir() else "busybox",
        help="template of the latency measurements (default: base if installed)",
    )
    parser.add_argument(
        "--pool-size",
        type=int,
        default=None,
        help="warm pool size for --template (default: the node's default)",
    )
    parser.add_argument("-n", type=int, default=20, help="sequential creates")
    parser.add_argument("--runs", type=int, default=10, help="commands.run per sandbox")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of concurrent creates")
    parser.add_argument(
        "--settle",
        type=float,
        default=3.0,
        help="seconds of quiet before each phase (the pool refills)",
    )
    parser.add_argument("--idle", type=int, default=10, help="sandboxes for idle memory")
    parser.add_argument("--fit-cap", type=int, default=200, help="0 skips the fit test")
    parser.add_argument(
        "--reserve-gib",
        type=float,
        default=2.0,
        help="the fit test stops when MemAvailable drops below this",
    )
    parser.add_argument(
        "--envd-bundle",
        type=Path,
        default=None,
        help="envd's bundle (python -m hutch.node.envd_bundle build; default: this checkout's)",
    )
    args = parser.parse_args()

    if os.geteuid() != 0:
        raise SystemExit("bench/serve.py needs root (runc, network namespaces)")
    home = Path(tempfile.mkdtemp(prefix="hutch-bench-serve-", dir="/var/tmp"))
    build_busybox(home / "templates")
    if args.template == "base":
        (home / "templates" / "base").symlink_to(SYSTEM_BASE)
    extra = {}
    if args.pool_size is not None:
        extra["HUTCH_NODE_POOL_SIZE"] = f"{args.template}={args.pool_size}"
    inst = new_instance(home=home, extra_env=extra, envd_bundle=args.envd_bundle)
    rows: list[tuple[str, str]] = []
    try:
        key = inst.hutch("keys", "create").strip()
        os.environ.update(
            E2B_API_URL=inst.api_url, E2B_SANDBOX_URL=inst.sandbox_url, E2B_API_KEY=key
        )
        for k in [k for k in os.environ if "proxy" in k.lower()]:
            del os.environ[k]
        _, _ = _timed(inst.start)
        time.sleep(args.settle)
        target = pool_target(args.template, args.pool_size)
        rows += bench_settled(args.template, 10, lambda: wait_for_pool(home, target, args.settle))
        rows += bench_sequential(args.template, args.n, args.runs)
        rows += bench_concurrent(args.template, args.concurrency, args.rounds, args.settle)
        time.sleep(args.settle)
        rows += bench_idle_memory(args.template, args.idle)
        if args.fit_cap:
            time.sleep(args.settle)
            rows += bench_fit(args.fit_cap, int(args.reserve_gib * 2**30))
        rows += bench_runc_floor(home, 10)
    finally:
        inst.stop()
        inst.destroy_everything()
        _instance.remove_home(home)

    pool = "default" if args.pool_size is None else str(args.pool_size)
    print_table(
        f"hutch serve on this machine ({os.cpu_count()} CPUs, runc), template "
        f"{args.template}, warm pool {pool}",
        rows,
        ("measure", "value"),
    )


if __name__ == "__main__":
    main()
