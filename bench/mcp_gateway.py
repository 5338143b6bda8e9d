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
The serve, the timed creates and the memory rows are ``_template_bench.py``'s, shared with
``bench/interpreter.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from _table import print_table
from _template_bench import TemplateServe, create_rows, template_serve, timed_creates
from serve import _ms

from tests.e2e.serveproc import HostNames

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


def _create():  # type: ignore[no-untyped-def]
    from e2b import Sandbox

    return Sandbox.create(mcp=CONFIG, timeout=300)


def round_trips(bench: TemplateServe, runs: int) -> list[tuple[str, str]]:
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
        mem, fs = asyncio.run(_mcp(bench.serve.sandbox_url, sbx, body))
        rows = [
            (f"tools/call memory__read_graph round trip (n={runs}) p50 / p95", _ms(mem)),
            (f"tools/call filesystem__list_directory round trip (n={runs}) p50 / p95", _ms(fs)),
        ]
        time.sleep(5)
        rows += bench.memory_rows(
            bench.host_id(sbx.sandbox_id),
            "memory of one gateway sandbox, filesystem + memory, idle (memory cgroup)",
        )
    finally:
        sbx.kill()
    return rows


def idle_member(bench: TemplateServe) -> list[tuple[str, str]]:
    """An idle pool member of ``mcp-gateway`` (no gateway yet: it starts at create)."""
    member = next(
        d for d in (bench.home / "sandboxes").glob("pool-*") if not (d / "sandbox.json").exists()
    )
    return bench.memory_rows(
        member.name, "memory of an idle mcp-gateway pool member (memory cgroup)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10, help="creates, cold and pooled")
    parser.add_argument("--runs", type=int, default=50, help="tools/call round trips")
    parser.add_argument("--settle", type=float, default=3.0)
    args = parser.parse_args()
    rows: list[tuple[str, str]] = []
    with template_serve(TEMPLATE, NAMES, script="bench/mcp_gateway.py") as bench:

        def first_list(sbx) -> None:  # type: ignore[no-untyped-def]
            assert asyncio.run(_mcp(bench.serve.sandbox_url, sbx, _list)) > 10

        parts = "Sandbox.create(mcp=...); first initialize + tools/list"
        time.sleep(args.settle)
        cold = timed_creates(args.n, lambda: time.sleep(0.5), _create, first_list)
        rows += create_rows("create-to-MCP-ready, cold, no pool", args.n, cold, parts=parts)
        bench.with_pool(2)
        pooled = timed_creates(
            args.n, lambda: bench.wait_for_pool(2, args.settle), _create, first_list
        )
        rows += create_rows("create-to-MCP-ready, from the pool", args.n, pooled, parts=parts)
        bench.wait_for_pool(2, args.settle)
        rows += idle_member(bench)
        rows += round_trips(bench, args.runs)
    print_table(
        f"MCP gateway through hutch serve on this machine ({os.cpu_count()} CPUs, runc), "
        f"template {TEMPLATE}, e2b SDK + mcp SDK client",
        rows,
        ("measure", "value"),
    )


if __name__ == "__main__":
    main()
