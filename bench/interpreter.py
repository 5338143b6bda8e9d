"""Code-interpreter benchmark: create-to-first-result, run_code round trips, a chart, memory.

Run as root from the repository, after ``./install.sh`` built ``code-interpreter-v1``:

    .venv/bin/python bench/interpreter.py [-n 10] [--runs 50]

It starts its own ``hutch serve`` (private home, free loopback ports, its own host names
``hbi*``: bridge ``hbi0`` on 10.216.8.0/24, netns ``hbi-*``, veths ``hbiv*``, nft table ``hbi``,
cgroup parent ``hbi-<pid>``, apart from ``bench/serve.py``'s ``hbn*`` so both can run at
once) with install.sh's ``code-interpreter-v1`` linked in, drives it with
the official ``e2b-code-interpreter`` SDK, prints one table and removes everything it
started. Cold creates run with no warm pool; the serve is then restarted with the pool
(``HUTCH_NODE_POOL_SIZE=code-interpreter-v1=2``) for the pooled creates, the round trips,
the chart and the idle memory. The runc floor is measured in the same run. The serve,
the timed creates and the memory rows are ``_template_bench.py``'s, shared with
``bench/mcp_gateway.py``.
"""

from __future__ import annotations

import argparse
import os
import time

import _instance
from _table import print_table
from _template_bench import TemplateServe, create_rows, template_serve, timed_creates
from serve import _ms, _timed, bench_runc_floor

from tests.e2e.serveproc import HostNames

CGROUP_PARENT = f"hbi-{os.getpid()}"
NAMES = HostNames(
    bridge="hbi0",
    subnet="10.216.8.0/24",
    netns_prefix="hbi-",
    veth_prefix="hbiv",
    nft_table="hbi",
    cgroup_parent=CGROUP_PARENT,
    extra_env={"HUTCH_NODE_ENVD_READY_TIMEOUT_S": "120"},
)

TEMPLATE = "code-interpreter-v1"
CHART = (
    "import matplotlib.pyplot as plt\n"
    "plt.figure(); plt.plot([1, 2, 3], [1, 4, 9]); plt.title('squares'); plt.show()"
)


def _create():  # type: ignore[no-untyped-def]
    from e2b_code_interpreter import Sandbox

    return Sandbox.create(timeout=300)


def _first_result(sbx) -> None:  # type: ignore[no-untyped-def]
    assert sbx.run_code("1+1").text == "2"


def round_trips(runs: int) -> list[tuple[str, str]]:
    """``run_code("1+1")`` and a matplotlib chart, in one sandbox."""
    sbx = _create()
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


def idle_memory(bench: TemplateServe) -> list[tuple[str, str]]:
    """One interpreter sandbox after a ``run_code``, idle for a while: its cgroup and the
    share of each of its processes."""
    sbx = _create()
    try:
        sbx.run_code("1+1")
        time.sleep(5)
        return bench.memory_rows(
            bench.host_id(sbx.sandbox_id),
            "idle memory of one interpreter sandbox (memory cgroup)",
        )
    finally:
        sbx.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10, help="creates, cold and pooled")
    parser.add_argument("--runs", type=int, default=50, help='run_code("1+1") round trips')
    parser.add_argument("--settle", type=float, default=3.0)
    args = parser.parse_args()
    rows: list[tuple[str, str]] = []
    with template_serve(TEMPLATE, NAMES, script="bench/interpreter.py") as bench:
        time.sleep(args.settle)
        cold = timed_creates(args.n, lambda: time.sleep(0.5), _create, _first_result)
        rows += create_rows("create-to-first-result, cold, no pool", args.n, cold,
                            parts="Sandbox.create(); first run_code")  # fmt: skip
        bench.with_pool(2)
        pooled = timed_creates(
            args.n, lambda: bench.wait_for_pool(2, args.settle), _create, _first_result
        )
        rows += create_rows("create-to-first-result, from the pool", args.n, pooled,
                            parts="Sandbox.create(); first run_code")  # fmt: skip
        bench.wait_for_pool(2, args.settle)
        rows += round_trips(args.runs)
        bench.wait_for_pool(2, args.settle)
        rows += idle_memory(bench)
        _instance.CGROUP_PARENT = CGROUP_PARENT  # the floor's containers under our parent
        rows += bench_runc_floor(bench.home, 10)
    print_table(
        f"code interpreter through hutch serve on this machine ({os.cpu_count()} CPUs, runc), "
        f"template {TEMPLATE}, e2b-code-interpreter SDK",
        rows,
        ("measure", "value"),
    )


if __name__ == "__main__":
    main()
