"""Code-interpreter benchmark: create-to-first-result, run_code round trips, a chart, memory.

Run as root from the repository, after ``./install.sh`` built ``code-interpreter-v1``:

    .venv/bin/python bench/interpreter.py [-n 10] [--runs 50]

It starts its own ``hutch serve`` (private home, free loopback ports, its own host names
``hbi*``: bridge ``hbi0`` on 10.216.8.0/24, netns ``hbi-*``, veths ``hbw*``, nft table ``hbi``,
cgroup parent ``hbi-<pid>``, apart from ``bench/serve.py``'s ``hbn*`` so both can run at
once) with install.sh's ``code-interpreter-v1`` linked in, drives it with
the official ``e2b-code-interpreter`` SDK, prints one table and removes everything it
started. Cold creates run with no warm pool; the serve is then restarted with the pool
(``HUTCH_NODE_POOL_SIZE=code-interpreter-v1=2``) for the pooled creates, the round trips,
the chart and the idle memory. The runc floor is measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import _instance
from _table import print_table
from serve import _ms, _timed, bench_runc_floor, wait_for_pool

from hutch.node.templates.busybox import build_busybox
from tests.e2e.serveproc import HostNames, Serve, link_installed_template, nodehelpers

CGROUP_PARENT = f"hbi-{os.getpid()}"
NAMES = HostNames(
    bridge="hbi0",
    subnet="10.216.8.0/24",
    netns_prefix="hbi-",
    veth_prefix="hbw",
    nft_table="hbi",
    cgroup_parent=CGROUP_PARENT,
    extra_env={"HUTCH_NODE_ENVD_READY_TIMEOUT_S": "120"},
)

TEMPLATE = "code-interpreter-v1"
CHART = (
    "import matplotlib.pyplot as plt\n"
    "plt.figure(); plt.plot([1, 2, 3], [1, 4, 9]); plt.title('squares'); plt.show()"
)


def create_to_first_result(
    n: int, before: Callable[[], None]
) -> tuple[list[float], list[float], list[float]]:
    """``Sandbox.create()`` then ``run_code("1+1")``, ``n`` times (``before`` each): the
    whole, the create alone and the first ``run_code`` alone."""
    from e2b_code_interpreter import Sandbox

    whole, creates, firsts = [], [], []
    for _ in range(n):
        before()
        t0 = time.perf_counter()
        sbx = Sandbox.create(timeout=300)
        t1 = time.perf_counter()
        assert sbx.run_code("1+1").text == "2"
        t2 = time.perf_counter()
        whole.append(t2 - t0)
        creates.append(t1 - t0)
        firsts.append(t2 - t1)
        sbx.kill()
    return whole, creates, firsts


def round_trips(runs: int) -> list[tuple[str, str]]:
    """``run_code("1+1")`` and a matplotlib chart, in one sandbox."""
    from e2b_code_interpreter import Sandbox

    sbx = Sandbox.create(timeout=300)
    try:
        sbx.run_code("1+1")
        rtts = [_timed(lambda: sbx.run_code("1+1"))[0] for _ in range(runs)]
        first_chart, ex = _timed(lambda: sbx.run_code(CHART))
        assert ex.results and ex.results[0].png, ex  # type: ignore[attr-defined]
        charts = [_timed(lambda: sbx.run_code(CHART))[0] for _ in range(10)]
    finally:
        sbx.kill()
    return [
        (f'run_code("1+1") round trip (n={runs}) p50 / p95', _ms(rtts)),
        ("matplotlib chart round trip, first in a kernel (imports matplotlib)",
         f"{first_chart * 1000:.0f} ms"),
        ("matplotlib chart round trip, later (n=10) p50 / p95", _ms(charts)),
    ]  # fmt: skip


def _processes(cgroup_dir: Path) -> list[tuple[str, int, int]]:
    """(command, RSS, PSS) of each process in a memory cgroup."""
    out = []
    for pid in (cgroup_dir / "cgroup.procs").read_text().split():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        fields = {ln.split(":")[0]: ln.split()[1] for ln in rollup.splitlines()[1:]}
        words = [a.decode(errors="replace") for a in argv if a][:4]
        out.append((" ".join(words)[:70], int(fields["Rss"]) * 1024, int(fields["Pss"]) * 1024))
    return out


def idle_memory() -> list[tuple[str, str]]:
    """One interpreter sandbox after a ``run_code``, idle for a while: its cgroup and the
    share of each of its processes."""
    from e2b_code_interpreter import Sandbox

    mib = 2**20
    sbx = Sandbox.create(timeout=300)
    try:
        sbx.run_code("1+1")
        time.sleep(5)
        host_id = _host_id(sbx.sandbox_id)
        cgroup = _memory_cgroup(host_id)
        usage = _cgroup_usage(cgroup) if cgroup else None
        procs = _processes(cgroup) if cgroup else []
    finally:
        sbx.kill()
    rows = [("idle memory of one interpreter sandbox (memory cgroup)",
             f"{(usage or 0) / mib:.1f} MiB")]  # fmt: skip
    for command, rss, pss in sorted(procs, key=lambda p: -p[2]):
        rows.append((f"  process: {command}", f"PSS {pss / mib:.1f} MiB (RSS {rss / mib:.1f})"))
    return rows


def _host_id(sandbox_id: str) -> str:
    """A pooled sandbox's directories keep its pool id (``sandbox.json`` names both)."""
    import json

    for record in (_HOME / "sandboxes").glob("*/sandbox.json"):
        data = json.loads(record.read_text())
        if data.get("sandbox_id") == sandbox_id:
            return record.parent.name
    return sandbox_id


def _cgroup_usage(cgroup: Path) -> int | None:
    for name in ("memory.usage_in_bytes", "memory.current"):
        if (cgroup / name).is_file():
            return int((cgroup / name).read_text())
    return None


def _memory_cgroup(host_id: str) -> Path | None:
    saved = nodehelpers.CGROUP_PARENT
    nodehelpers.CGROUP_PARENT = CGROUP_PARENT
    try:
        for parent in nodehelpers.cgroup_parents():
            if (parent / host_id / "memory.usage_in_bytes").is_file() or (
                parent / host_id / "memory.current"
            ).is_file():
                return parent / host_id
    finally:
        nodehelpers.CGROUP_PARENT = saved
    return None


_HOME = Path("/nonexistent")


def main() -> None:
    global _HOME
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10, help="creates, cold and pooled")
    parser.add_argument("--runs", type=int, default=50, help='run_code("1+1") round trips')
    parser.add_argument("--settle", type=float, default=3.0)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/interpreter.py needs root (runc, network namespaces)")
    home = Path(tempfile.mkdtemp(prefix="hutch-bench-interp-", dir="/var/tmp"))
    _HOME = home
    build_busybox(home / "templates")
    for name in ("base", TEMPLATE):
        if not link_installed_template(home / "templates", name):
            raise SystemExit(f"install.sh's {name} template is not built (run ./install.sh)")
    inst = Serve(
        home=home, envd_bundle=nodehelpers.cached_envd_bundle(), names=NAMES,
        extra_env={"HUTCH_NODE_POOL_SIZE": ""},
    )  # fmt: skip
    rows: list[tuple[str, str]] = []
    try:
        key = inst.hutch("keys", "create").strip()
        os.environ.update(
            E2B_API_URL=inst.api_url, E2B_SANDBOX_URL=inst.sandbox_url, E2B_API_KEY=key
        )
        for k in [k for k in os.environ if "proxy" in k.lower()]:
            del os.environ[k]
        inst.start()
        time.sleep(args.settle)
        cold, cold_create, cold_first = create_to_first_result(args.n, lambda: time.sleep(0.5))
        rows += [
            (f"create-to-first-result, cold, no pool (n={args.n}) p50 / p95", _ms(cold)),
            ("  of which Sandbox.create(); first run_code: p50 / p95",
             f"{_ms(cold_create)}; {_ms(cold_first)}"),
        ]  # fmt: skip
        inst.stop()
        inst.extra_env["HUTCH_NODE_POOL_SIZE"] = f"{TEMPLATE}=2"
        inst.start()
        pooled, pool_create, pool_first = create_to_first_result(
            args.n, lambda: wait_for_pool(home, 2, args.settle, 120)
        )
        rows += [
            (f"create-to-first-result, from the pool (n={args.n}) p50 / p95", _ms(pooled)),
            ("  of which Sandbox.create(); first run_code: p50 / p95",
             f"{_ms(pool_create)}; {_ms(pool_first)}"),
        ]  # fmt: skip
        wait_for_pool(home, 2, args.settle, 120)
        rows += round_trips(args.runs)
        wait_for_pool(home, 2, args.settle, 120)
        rows += idle_memory()
        _instance.CGROUP_PARENT = CGROUP_PARENT  # the floor's containers under our parent
        rows += bench_runc_floor(home, 10)
    finally:
        inst.stop()
        inst.destroy_everything()
        _instance.remove_home(home)
    print_table(
        f"code interpreter through hutch serve on this machine ({os.cpu_count()} CPUs, runc), "
        f"template {TEMPLATE}, e2b-code-interpreter SDK",
        rows,
        ("measure", "value"),
    )


if __name__ == "__main__":
    main()
