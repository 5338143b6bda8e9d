"""Measure sandbox network setup/teardown (root): ``python bench_network.py [N]``.

Not a test (nothing here passes or fails on time); it prints the medians quoted in
docs/network.md, for ``ip -batch`` and for one ``ip`` process per command.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time

from nethelpers import network_settings, purge_test_objects

from hutch.node.network.linux import LinuxSandboxNetworks


async def measure(*, batch: bool, rounds: int, allow_internet: bool) -> tuple[float, float]:
    nets = LinuxSandboxNetworks(network_settings(), batch=batch)
    await nets.ensure_bridge()
    setups: list[float] = []
    teardowns: list[float] = []
    try:
        for i in range(rounds):
            t0 = time.perf_counter()
            net = await nets.setup(f"bench{i}", allow_internet=allow_internet)
            t1 = time.perf_counter()
            await nets.teardown(f"bench{i}", address=net.address)
            t2 = time.perf_counter()
            setups.append(t1 - t0)
            teardowns.append(t2 - t1)
    finally:
        await nets.remove_bridge()
    return statistics.median(setups) * 1000, statistics.median(teardowns) * 1000


async def main(rounds: int) -> None:
    purge_test_objects()
    try:
        for batch in (True, False):
            for allow in (True, False):
                setup_ms, teardown_ms = await measure(
                    batch=batch, rounds=rounds, allow_internet=allow
                )
                mode = "ip -batch" if batch else "ip per command"
                print(
                    f"{mode:15} allow_internet={allow!s:5} "
                    f"setup {setup_ms:6.1f} ms  teardown {teardown_ms:6.1f} ms"
                    f"  (median of {rounds})"
                )
    finally:
        purge_test_objects()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20))
