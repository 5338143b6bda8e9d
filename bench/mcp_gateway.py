"""MCP gateway benchmark: create-to-MCP-ready (cold and from the pool), tool round trips.

Run as root from the repository, after ``./install.sh`` built ``mcp-gateway`` (not named
``mcp.py``: the script's directory comes first on ``sys.path`` and would hide the ``mcp``
SDK):

    .venv/bin/python bench/mcp_gateway.py [-n 10] [--runs 50]

It starts its own ``hutch serve`` (private home, free loopback ports, its own host names
``hbm*``: bridge ``hbm0`` on 10.216.12.0/24, netns ``hbm-*``, veths ``hbmv*``, nft table
``hbm``, cgroup parent ``hbm-<pid>``, apart from the other benchmarks' so they can run at
once) with install.sh's ``mcp-gateway`` linked in, drives it with the official ``e2b``
SDK and the ``mcp`` SDK's client, prints one table and removes everything it started.

*Create-to-MCP-ready* is ``Sandbox.create(mcp={"filesystem": ..., "memory": {}})`` (the
SDK's create, then its ``mcp-gateway --config``, which returns once ``/mcp`` serves) plus
the first MCP ``initialize`` and ``tools/list`` through hutch's proxy. Cold creates run
with no warm pool; the serve is then restarted with ``HUTCH_NODE_POOL_SIZE=mcp-gateway=2``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import _instance
import interpreter as interp_bench
from _table import print_table
from serve import _ms, wait_for_pool

from hutch.node.templates.busybox import build_busybox
from tests.e2e.serveproc import HostNames, Serve, link_installed_template, nodehelpers

CGROUP_PARENT = f"hbm-{os.getpid()}"
NAMES = HostNames(
    bridge="hbm0",
    subnet="10.216.12.0/24",
    netns_prefix="hbm-",
    veth_prefix="hbmv",
    nft_table="hbm",
    cgroup_parent=CGROUP_PARENT,
    extra_env={"HUTCH_NODE_ENVD_READY_TIMEOUT_S": "120"},
)
TEMPLATE = "mcp-gateway"
CONFIG = {"filesystem": {"paths": ["/home/user"]}, "memory": {}}


async def _mcp(sandbox_url: str, sbx, body):
    import httpx
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    headers = {
        "E2b-Sandbox-Id": sbx.sandbox_id,
        "E2b-Sandbox-Port": "50005",
        "Authorization": f"Bearer {sbx.get_mcp_token()}",
    }
    async with (
        httpx.AsyncClient(headers=headers) as http,
        streamable_http_client(f"{sandbox_url}/mcp", http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        return await body(session)


async def _list(session) -> int:
    return len((await session.list_tools()).tools)


def create_to_ready(
    sandbox_url: str, n: int, before: Callable[[], None]
) -> tuple[list[float], list[float], list[float]]:
    """The whole, the SDK's create (with the gateway's start) and the first MCP list."""
    from e2b import Sandbox

    whole, creates, firsts = [], [], []
    for _ in range(n):
        before()
        t0 = time.perf_counter()
        sbx = Sandbox.create(mcp=CONFIG, timeout=300)
        t1 = time.perf_counter()
        assert asyncio.run(_mcp(sandbox_url, sbx, _list)) > 10
        t2 = time.perf_counter()
        whole.append(t2 - t0)
        creates.append(t1 - t0)
        firsts.append(t2 - t1)
        sbx.kill()
    return whole, creates, firsts


def round_trips(sandbox_url: str, runs: int) -> list[tuple[str, str]]:
    """``tools/call`` round trips in one MCP session, to each server."""
    from e2b import Sandbox

    sbx = Sandbox.create(mcp=CONFIG, timeout=300)

    async def body(session) -> tuple[list[float], list[float]]:
        async def timed(name: str, args: dict) -> float:
            t0 = time.perf_counter()
            result = await session.call_tool(name, args)
            assert not result.isError, result
            return time.perf_counter() - t0

        await timed("memory__read_graph", {})
        mem = [await timed("memory__read_graph", {}) for _ in range(runs)]
        args = {"path": "/home/user"}
        fs = [await timed("filesystem__list_directory", args) for _ in range(runs)]
        return mem, fs

    try:
        mem, fs = asyncio.run(_mcp(sandbox_url, sbx, body))
        rows = [
            (f"tools/call memory__read_graph round trip (n={runs}) p50 / p95", _ms(mem)),
            (f"tools/call filesystem__list_directory round trip (n={runs}) p50 / p95", _ms(fs)),
        ]
        time.sleep(5)
        rows += _memory(sbx.sandbox_id, "one gateway sandbox, filesystem + memory, idle")
    finally:
        sbx.kill()
    return rows


def _memory(sandbox_id: str, label: str) -> list[tuple[str, str]]:
    mib = 2**20
    cgroup = interp_bench._memory_cgroup(interp_bench._host_id(sandbox_id))
    usage = interp_bench._cgroup_usage(cgroup) if cgroup else None
    procs = interp_bench._processes(cgroup) if cgroup else []
    rows = [(f"memory of {label} (memory cgroup)", f"{(usage or 0) / mib:.1f} MiB")]
    for command, rss, pss in sorted(procs, key=lambda p: -p[2]):
        rows.append((f"  process: {command}", f"PSS {pss / mib:.1f} MiB (RSS {rss / mib:.1f})"))
    return rows


def idle_member(home: Path) -> list[tuple[str, str]]:
    """An idle pool member of ``mcp-gateway`` (no gateway yet: it starts at create)."""
    member = next(
        d for d in (home / "sandboxes").glob("pool-*") if not (d / "sandbox.json").exists()
    )
    return _memory(member.name, "an idle mcp-gateway pool member")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10, help="creates, cold and pooled")
    parser.add_argument("--runs", type=int, default=50, help="tools/call round trips")
    parser.add_argument("--settle", type=float, default=3.0)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/mcp_gateway.py needs root (runc, network namespaces)")
    home = Path(tempfile.mkdtemp(prefix="hutch-bench-mcp-", dir="/var/tmp"))
    interp_bench._HOME = home
    interp_bench.CGROUP_PARENT = CGROUP_PARENT
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
        cold, cold_create, cold_first = create_to_ready(
            inst.sandbox_url, args.n, lambda: time.sleep(0.5)
        )
        rows += [
            (f"create-to-MCP-ready, cold, no pool (n={args.n}) p50 / p95", _ms(cold)),
            ("  of which Sandbox.create(mcp=...); first initialize + tools/list: p50 / p95",
             f"{_ms(cold_create)}; {_ms(cold_first)}"),
        ]  # fmt: skip
        inst.stop()
        inst.extra_env["HUTCH_NODE_POOL_SIZE"] = f"{TEMPLATE}=2"
        inst.start()
        pooled, pool_create, pool_first = create_to_ready(
            inst.sandbox_url, args.n, lambda: wait_for_pool(home, 2, args.settle, 120)
        )
        rows += [
            (f"create-to-MCP-ready, from the pool (n={args.n}) p50 / p95", _ms(pooled)),
            ("  of which Sandbox.create(mcp=...); first initialize + tools/list: p50 / p95",
             f"{_ms(pool_create)}; {_ms(pool_first)}"),
        ]  # fmt: skip
        wait_for_pool(home, 2, args.settle, 120)
        rows += idle_member(home)
        rows += round_trips(inst.sandbox_url, args.runs)
    finally:
        inst.stop()
        inst.destroy_everything()
        _instance.remove_home(home)
    print_table(
        f"MCP gateway through hutch serve on this machine ({os.cpu_count()} CPUs, runc), "
        f"template {TEMPLATE}, e2b SDK + mcp SDK client",
        rows,
        ("measure", "value"),
    )


if __name__ == "__main__":
    main()
