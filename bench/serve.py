"""hutch serve benchmark: create latency, command round trips, kill, memory, density.

Run as root from the repository:

    .venv/bin/python bench/serve.py [--template base] [--pool-size N] [--fit-cap 200] [--before REF]
    .venv/bin/python bench/serve.py --bursts-only [--before REF]

It starts its own ``hutch serve`` (private home, free loopback ports, own bridge and names:
see ``bench/_instance.py``), creates an API key, drives it with the official ``e2b`` SDK,
prints a table, and removes everything it started (sandboxes, netns, veths, cgroups, nft
table, bridge, home), also when a measurement fails. ``--pool-size`` sets the warm pool of
``--template`` (``HUTCH_NODE_POOL_SIZE``) so the same command measures both.
``--envd-zygote both`` measures every phase twice in one run, envd forked from the node's
zygote and exec'd (``HUTCH_NODE_ENVD_ZYGOTE``, ADR 0039), a column each beside its floor.

``--before REF`` measures hutch at git REF first (its ``src/`` exported to a temporary
directory, run as a second ``hutch serve`` with its own envd bundle, on its own bench slot),
then this tree, and prints both columns in one table, each with the runc floor measured just
before it, so one run on one machine compares them.

The burst rows (issue 19, ADR 0038): bursts of 10 and of 100 concurrent creates with the
node's default pool, p50 / p95 and errors; the first burst of each size meets the pool as
it is, the next ones the pool the node sized from that demand (``GET /hutch/status``).
``--bursts-only`` runs only those (and the runc floor).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
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


def pool_fill(inst: _instance.Serve, template: str) -> tuple[int, int]:
    """``(target, ready)`` of ``template``'s pool in ``GET /hutch/status``."""
    report = json.loads(inst.hutch("status", "--json"))
    for fill in report["pool"]:
        if fill["templateID"] == template:
            return fill["target"], fill["ready"]
    return 0, 0


def wait_for_fill(inst: _instance.Serve, template: str, timeout: float = 90) -> tuple[int, int]:
    """Until ``template``'s pool holds what it wants (or ``timeout``); its last fill."""
    deadline = time.monotonic() + timeout
    fill = pool_fill(inst, template)
    while fill[1] < fill[0] and time.monotonic() < deadline:
        time.sleep(0.5)
        fill = pool_fill(inst, template)
    return fill


def _burst(template: str, size: int) -> tuple[list[float], int, str]:
    """``size`` creates at once; their latencies, the errors and the first error's text.
    Every sandbox made is killed before it returns."""
    from e2b import Sandbox

    def timed(_: int) -> tuple[float, object]:
        t0 = time.perf_counter()
        try:
            out: object = Sandbox.create(template, timeout=300)
        except Exception as exc:  # counted: the row reports errors
            out = exc
        return time.perf_counter() - t0, out

    with concurrent.futures.ThreadPoolExecutor(size) as pool:
        results = list(pool.map(timed, range(size)))
        made = [r for _, r in results if not isinstance(r, Exception)]
        list(pool.map(lambda s: s.kill(), made))  # type: ignore[attr-defined]
    errors = [r for _, r in results if isinstance(r, Exception)]
    first = f"{type(errors[0]).__name__}: {str(errors[0])[:60]} " if errors else ""
    return [seconds for seconds, r in results if not isinstance(r, Exception)], len(errors), first


def bench_bursts(
    inst: _instance.Serve, template: str, sizes: tuple[int, ...], rounds: int
) -> list[tuple[str, str]]:
    """Per size: a first burst on the pool as it is, then ``rounds`` more, each after the
    pool refilled to what the node now wants (``GET /hutch/status``)."""
    rows = []
    for size in sizes:
        wait_for_fill(inst, template)
        before = pool_fill(inst, template)
        latencies, errors, first = _burst(template, size)
        rows.append((
            f"burst of {size} concurrent creates, first: p50 / p95, errors (pool ready)",
            f"{_ms(latencies) if latencies else '-'}, {errors} errors {first}(pool {before[1]})",
        ))  # fmt: skip
        later: list[float] = []
        later_errors, fills = 0, []
        for _ in range(rounds):
            fills.append(wait_for_fill(inst, template))
            latencies, errors, first = _burst(template, size)
            later += latencies
            later_errors += errors
        ready = "/".join(str(f[1]) for f in fills)
        rows.append((
            f"burst of {size} concurrent creates, next {rounds}: p50 / p95, errors (pool ready)",
            f"{_ms(later) if later else '-'}, {later_errors} errors (pool {ready})",
        ))  # fmt: skip
    return rows


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


def bench_idle_memory(template: str, count: int, cgroup_parent: str) -> list[tuple[str, str]]:
    from e2b import Sandbox

    sandboxes = [Sandbox.create(template, timeout=300) for _ in range(count)]
    try:
        for sbx in sandboxes:
            sbx.commands.run("true")
        time.sleep(5)  # let envd settle into idle
        hosts = _sandbox_cgroups(cgroup_parent)
        usage = [_instance.cgroup_usage_bytes(h, cgroup_parent) for h in hosts]
        values = [u for u in usage if u is not None]
        pss = [m for m in (_pss_uss(h, cgroup_parent) for h in hosts) if m is not None]
    finally:
        for sbx in sandboxes:
            sbx.kill()
    mib = 2**20
    return [
        (
            f"idle memory per {template} sandbox (memory cgroup, envd + tini; median of "
            f"{len(values)} cgroups)",
            f"{statistics.median(values) / mib:.1f} MiB",
        ),
        (
            "idle memory per sandbox: PSS / USS of its processes (median)",
            f"{statistics.median(p for p, _ in pss) / mib:.1f} MiB / "
            f"{statistics.median(u for _, u in pss) / mib:.1f} MiB",
        ),
    ]


def _pss_uss(host_id: str, cgroup_parent: str) -> tuple[int, int] | None:
    """PSS and USS (bytes, from ``smaps_rollup``) summed over one sandbox's processes."""
    saved = _instance.nodehelpers.CGROUP_PARENT
    _instance.nodehelpers.CGROUP_PARENT = cgroup_parent
    try:
        parents = _instance.nodehelpers.cgroup_parents()
    finally:
        _instance.nodehelpers.CGROUP_PARENT = saved
    procs = next(
        (p / host_id / "cgroup.procs" for p in parents if (p / host_id / "cgroup.procs").is_file()),
        None,
    )
    if procs is None:
        return None
    pss = uss = 0
    for pid in procs.read_text().split():
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in rollup.splitlines():
            key, _, value = line.partition(":")
            kib = int(value.split()[0]) * 1024 if value.split() else 0
            if key == "Pss":
                pss += kib
            elif key in ("Private_Clean", "Private_Dirty"):
                uss += kib
    return pss, uss


def _sandbox_cgroups(cgroup_parent: str) -> list[str]:
    saved = _instance.nodehelpers.CGROUP_PARENT
    _instance.nodehelpers.CGROUP_PARENT = cgroup_parent
    try:
        for parent in _instance.nodehelpers.cgroup_parents():
            if parent.parts[4] == "memory" or (parent / "memory.current").exists():
                return [c.name for c in parent.iterdir() if c.is_dir()]
    finally:
        _instance.nodehelpers.CGROUP_PARENT = saved
    return []


#: The time series whose growth per operation the phase rows report (``_sum`` of each).
_PHASE_SERIES = (
    "hutch_node_boot_phase_duration_seconds",
    "hutch_node_runtime_call_duration_seconds",
    "hutch_node_network_call_duration_seconds",
    "hutch_node_request_duration_seconds",
    "hutch_sandbox_create_phase_duration_seconds",
    "hutch_api_request_duration_seconds",
)


def scrape_sums(url: str) -> dict[str, float]:
    """Every ``<series>_sum{labels}`` of :data:`_PHASE_SERIES` at ``url`` (Prometheus text)."""
    import httpx

    sums: dict[str, float] = {}
    for line in httpx.get(url, timeout=10).text.splitlines():
        name, _, value = line.rpartition(" ")
        base = name.split("{", 1)[0]
        if base.endswith("_sum") and base[:-4] in _PHASE_SERIES:
            sums[name.replace("_duration_seconds_sum", "")] = float(value)
    return sums


class PhaseTally:
    """Per kind of operation, the growth of every phase series across its calls."""

    def __init__(self, url: str | None) -> None:
        self._url = url
        self.spent: dict[str, dict[str, float]] = {}
        self.calls: dict[str, int] = {}

    def timed(self, kind: str, fn: Callable[[], object]) -> tuple[float, object]:
        before = scrape_sums(self._url) if self._url else {}
        seconds, out = _timed(fn)
        if self._url:
            after = scrape_sums(self._url)
            mine = self.spent.setdefault(kind, {})
            for key, value in after.items():
                mine[key] = mine.get(key, 0.0) + value - before.get(key, 0.0)
        self.calls[kind] = self.calls.get(kind, 0) + 1
        return seconds, out

    def rows(self, kinds: tuple[str, ...]) -> list[tuple[str, str]]:
        """``phase … ms per call (kind / kind …)`` for each series that grew at all."""
        keys = sorted({k for kind in kinds for k, v in self.spent.get(kind, {}).items() if v})
        rows = []
        for key in keys:
            per = [
                self.spent.get(kind, {}).get(key, 0.0) / max(self.calls.get(kind, 0), 1) * 1000
                for kind in kinds
            ]
            if max(per) >= 0.5:
                rows.append((f"phase {key}, ms per call ({' / '.join(kinds)})",
                             " / ".join(f"{v:.1f}" for v in per)))  # fmt: skip
        return rows


def bench_restore_fork(
    template: str, n: int, mib: int, *, metrics_url: str | None = None
) -> list[tuple[str, str]]:
    """A cold create, a create from a snapshot and a fork, interleaved, ``n`` of each.

    All three are cold on purpose: the source, the cold creates (and so the snapshot and
    the forks, which keep its policy) deny internet access, which keys a warm pool of its
    own that has no members (ADR 0011), so none of them is served from the pool. The
    snapshot holds ``mib`` MiB written by the source besides the template's files.
    With ``metrics_url``, the node's and api's timings grown by each call are tallied per
    kind, one row per phase (run with ``--pool-size 0``: a refill would count too)."""
    from e2b import Sandbox

    tally = PhaseTally(metrics_url)

    source = Sandbox.create(template, timeout=600, allow_internet_access=False)
    snaps: set[str] = set()
    made: list = []
    try:
        source.commands.run(
            f"dd if=/dev/urandom of=/tmp/bench-snapshot bs=1M count={mib} 2>/dev/null",
            user="root", timeout=300,
        )  # fmt: skip
        snapshot = source.create_snapshot().snapshot_id
        snaps.add(snapshot)
        cold, restored, forked = [], [], []
        for i in range(n):
            seconds, sbx = tally.timed(
                "cold", lambda: Sandbox.create(template, timeout=120, allow_internet_access=False)
            )
            cold.append(seconds)
            made.append(sbx)
            seconds, sbx = tally.timed("restore", lambda: Sandbox.create(snapshot, timeout=120))
            restored.append(seconds)
            made.append(sbx)
            seconds, forks = tally.timed("fork", lambda: source.fork(count=1, timeout=120))
            forked.append(seconds)
            for fork in forks:  # type: ignore[attr-defined]
                if isinstance(fork, Exception):
                    raise fork
                made.append(fork)
            if i == 0:  # outside the timings: the snapshot's file is in both
                for sbx in made[-2:]:
                    assert sbx.commands.run("test -s /tmp/bench-snapshot").exit_code == 0
            while made:
                made.pop().kill()
    finally:
        for sbx in [source, *made]:
            with contextlib.suppress(Exception):  # best effort: the home goes anyway
                sbx.kill()
        with contextlib.suppress(Exception):
            snaps |= {s.snapshot_id for s in Sandbox.list_snapshots(
                sandbox_id=source.sandbox_id, limit=100).next_items()}  # fmt: skip
        for snap in snaps:
            with contextlib.suppress(Exception):
                Sandbox.delete_snapshot(snap)
    return [
        (f"cold Sandbox.create({template!r}) to ready, no pool (n={n}) p50 / p95", _ms(cold)),
        (f"Sandbox.create(snapshot_id) to ready ({mib} MiB layer; n={n}) p50 / p95",
         _ms(restored)),
        (f"fork() to ready (one snapshot + one create; n={n}) p50 / p95", _ms(forked)),
        *tally.rows(("cold", "restore", "fork")),
    ]  # fmt: skip


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


def bench_runc_floor(home: Path, n: int, cgroup_parent: str) -> list[tuple[str, str]]:
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
        spec["linux"]["cgroupsPath"] = f"{cgroup_parent}/{cid}"
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
    parser.add_argument(
        "--snapshot-mib", type=int, default=16, help="MiB the snapshot holds (restore, fork)"
    )
    parser.add_argument("--restores", type=int, default=10, help="restores and forks")
    parser.add_argument("--bursts", default="10,100", help="burst sizes, comma-separated")
    parser.add_argument("--burst-rounds", type=int, default=3, help="bursts after the first")
    parser.add_argument(
        "--bursts-only", action="store_true", help="only the bursts (and the runc floor)"
    )
    parser.add_argument(
        "--cold-only",
        action="store_true",
        help="only cold create, restore and fork with their phase rows (and the runc floor)",
    )
    parser.add_argument(
        "--burst-overcommit",
        type=float,
        default=128.0,
        help="with --bursts-only: HUTCH_PLACEMENT_CPU/MEMORY_OVERCOMMIT (placed per core, per MiB)",
    )
    parser.add_argument(
        "--before", metavar="REF", help="also measure hutch at git REF first, in the same run"
    )
    parser.add_argument(
        "--before-slot",
        type=int,
        default=(_instance.SLOT + 5) % 10,
        help="bench slot of REF's instance (default: this one's + 5, mod 10)",
    )
    parser.add_argument(
        "--envd-zygote",
        choices=("default", "on", "off", "both"),
        default="default",
        help="envd forked from the node's zygote or exec'd (both: a column each, on first)",
    )
    args = parser.parse_args()

    if os.geteuid() != 0:
        raise SystemExit("bench/serve.py needs root (runc, network namespaces)")
    columns: list[tuple[str, list[tuple[str, str]]]] = []
    zygote = {"default": [None], "on": ["true"], "off": ["false"], "both": ["true", "false"]}
    if args.before:
        names = _instance.bench_names(args.before_slot)
        if names.bridge == _instance.BENCH_NAMES.bridge or _instance.slot_in_use(names):
            raise SystemExit(f"--before-slot {args.before_slot}: in use or this run's own")
        with exported_tree(args.before) as src:
            # REF with the first --envd-zygote mode too: before and after on the same path.
            mode = zygote[args.envd_zygote][0]
            columns.append((f"before ({args.before})",
                            run_column(args, names=names, src=src, zygote=mode)))  # fmt: skip
    for mode in zygote[args.envd_zygote]:
        name = {None: "this tree", "true": "zygote on", "false": "zygote off"}[mode]
        columns.append((name, run_column(args, names=_instance.BENCH_NAMES, zygote=mode)))

    pool = "default" if args.pool_size is None else str(args.pool_size)
    labels = [label for label, _ in columns[-1][1]]
    values = [dict(rows) for _, rows in columns]
    print_table(
        f"hutch serve on this machine ({os.cpu_count()} CPUs, runc), template "
        f"{args.template}, warm pool {pool}",
        [(label, *(v.get(label, "") for v in values)) for label in labels],
        ("measure", *(name for name, _ in columns)) if len(columns) > 1 else ("measure", "value"),
    )


@contextlib.contextmanager
def exported_tree(ref: str) -> Iterator[Path]:
    """``src/`` of git ``ref`` in a temporary directory (removed after); its path."""
    work = Path(tempfile.mkdtemp(prefix="hutch-bench-before-", dir="/var/tmp"))
    try:
        archive = subprocess.run(
            ["git", "-C", str(_instance.REPO), "archive", ref, "src"],
            check=True, capture_output=True,
        ).stdout  # fmt: skip
        subprocess.run(["tar", "-x", "-C", str(work)], input=archive, check=True)
        yield work / "src"
    finally:
        _instance.remove_home(work)


def run_column(
    args: argparse.Namespace,
    *,
    names: _instance.HostNames,
    src: Path | None = None,
    zygote: str | None = None,
) -> list[tuple[str, str]]:
    """Every phase against one ``hutch serve`` (``src``: another tree's, else this one's;
    ``zygote``: ``HUTCH_NODE_ENVD_ZYGOTE`` for it, else the node's default)."""
    home = Path(tempfile.mkdtemp(prefix="hutch-bench-serve-", dir="/var/tmp"))
    build_busybox(home / "templates")
    if args.template == "base":
        (home / "templates" / "base").symlink_to(SYSTEM_BASE)
    extra = {}
    if args.pool_size is not None:
        extra["HUTCH_NODE_POOL_SIZE"] = f"{args.template}={args.pool_size}"
    if zygote is not None:
        extra["HUTCH_NODE_ENVD_ZYGOTE"] = zygote
    if args.bursts_only:
        # Room to place the largest burst of --template (2 vCPUs each for base): the
        # default 16 vCPUs a core refuses most of 100 at once on 2 cores with 503s.
        extra["HUTCH_PLACEMENT_CPU_OVERCOMMIT"] = str(args.burst_overcommit)
        extra["HUTCH_PLACEMENT_MEMORY_OVERCOMMIT"] = str(args.burst_overcommit)
    bundle = args.envd_bundle
    if src is not None:
        extra["PYTHONPATH"] = str(src)  # that tree's hutch first on the path
        bundle = home / "envd"  # and its own envd, built from its source
        subprocess.run(
            [sys.executable, "-m", "hutch.node.envd_bundle", "build", "--out", str(bundle)],
            env={**os.environ, "PYTHONPATH": str(src)}, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
    inst = new_instance(home=home, extra_env=extra, envd_bundle=bundle, names=names)
    rows: list[tuple[str, str]] = []
    try:
        rows += bench_runc_floor(home, 10, names.cgroup_parent)
        key = inst.hutch("keys", "create").strip()
        os.environ.update(
            E2B_API_URL=inst.api_url, E2B_SANDBOX_URL=inst.sandbox_url, E2B_API_KEY=key
        )
        for k in [k for k in os.environ if "proxy" in k.lower()]:
            del os.environ[k]
        inst.start()
        time.sleep(args.settle)
        sizes = tuple(int(n) for n in args.bursts.split(",") if n)
        if args.bursts_only:
            rows += bench_bursts(inst, args.template, sizes, args.burst_rounds)
            return rows
        if args.cold_only:
            rows += bench_restore_fork(
                args.template, args.restores, args.snapshot_mib, metrics_url=inst.metrics_url
            )
            return rows[3:] + rows[:3]
        target = pool_target(args.template, args.pool_size)
        rows += bench_settled(args.template, 10, lambda: wait_for_pool(home, target, args.settle))
        rows += bench_sequential(args.template, args.n, args.runs)
        rows += bench_concurrent(args.template, args.concurrency, args.rounds, args.settle)
        rows += bench_bursts(inst, args.template, sizes, args.burst_rounds)
        if args.restores:
            time.sleep(args.settle)
            rows += bench_restore_fork(
                args.template, args.restores, args.snapshot_mib, metrics_url=inst.metrics_url
            )
        time.sleep(args.settle)
        rows += bench_idle_memory(args.template, args.idle, names.cgroup_parent)
        if args.fit_cap:
            time.sleep(args.settle)
            rows += bench_fit(args.fit_cap, int(args.reserve_gib * 2**30))
    finally:
        inst.stop()
        inst.destroy_everything()
        _instance.remove_home(home)
    return rows[3:] + rows[:3]  # the floor rows last, as before


if __name__ == "__main__":
    main()
