"""Measure the proxy's overhead against a real envd: latency, requests/s, big-file throughput, RSS.

Run: ``.venv/bin/python -m tests.integration.proxy.bench_proxy`` (not collected by pytest).
The proxy runs in its own process so its peak RSS (VmHWM) is its alone.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.conftest import free_port, start_envd, stop_envd

SIZE = 512 * 1024 * 1024
_PROXY = """
import sys, uvicorn
from hutch.proxy.catalog import InMemorySandboxCatalog, SandboxRoute
from hutch.proxy.runner import create_config
cat = InMemorySandboxCatalog()
cat.put(SandboxRoute("ibench", "127.0.0.1", ports={49983: int(sys.argv[1])}))
uvicorn.Server(create_config(cat, host="127.0.0.1", port=int(sys.argv[2]))).run()
"""
HEADERS = {"E2b-Sandbox-Id": "ibench", "E2b-Sandbox-Port": "49983"}


def rss_peak_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def latency(url: str, n: int = 400) -> float:
    with httpx.Client(headers=HEADERS) as c:
        for _ in range(20):
            c.get(url + "/health")
        samples = []
        for _ in range(n):
            t = time.perf_counter()
            c.get(url + "/health")
            samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1000


async def rps(url: str, total: int = 2000, concurrency: int = 16) -> float:
    async with httpx.AsyncClient(
        headers=HEADERS, limits=httpx.Limits(max_connections=concurrency)
    ) as c:
        left = total

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await c.get(url + "/health")

        t = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return total / (time.perf_counter() - t)


def download(url: str, path: str) -> float:
    t = time.perf_counter()
    got = 0
    with httpx.stream(
        "GET",
        url + "/files",
        params={"path": path},
        headers={**HEADERS, "accept-encoding": "identity"},
        timeout=None,
    ) as r:
        for chunk in r.iter_raw(1 << 20):
            got += len(chunk)
    assert got == SIZE, got
    return SIZE / (time.perf_counter() - t) / 2**20


def upload(url: str, path: str) -> float:
    block = os.urandom(1 << 20)

    def body():
        for _ in range(SIZE >> 20):
            yield block

    t = time.perf_counter()
    r = httpx.post(
        url + "/files",
        params={"path": path},
        headers={**HEADERS, "content-type": "application/octet-stream"},
        content=body(),
        timeout=None,
    )
    assert r.status_code == 200, r.text
    return SIZE / (time.perf_counter() - t) / 2**20


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="hutch-bench-"))
    envd = start_envd(tmp)
    port = free_port()
    proxy = subprocess.Popen([sys.executable, "-c", _PROXY, str(envd.port), str(port)])
    purl = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                httpx.get(purl + "/health", headers=HEADERS)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        big = tmp / "big.bin"
        with open(big, "wb") as f:
            for _ in range(SIZE >> 20):
                f.write(os.urandom(1 << 20))
        print(f"proxy RSS idle: {rss_peak_mib(proxy.pid):.1f} MiB")
        for name, url in (("direct", envd.url), ("proxy", purl)):
            print(f"{name:7} GET /health median latency: {latency(url):.2f} ms")
            print(f"{name:7} GET /health 16 concurrent:   {asyncio.run(rps(url)):.0f} req/s")
            print(f"{name:7} download 512 MiB:            {download(url, str(big)):.0f} MiB/s")
            rate = upload(url, str(tmp / f"up-{name}.bin"))
            print(f"{name:7} upload 512 MiB:              {rate:.0f} MiB/s")
        print(f"proxy RSS peak (VmHWM) after all: {rss_peak_mib(proxy.pid):.1f} MiB")
    finally:
        proxy.terminate()
        proxy.wait()
        stop_envd(envd)
        subprocess.run(["rm", "-rf", str(tmp)], check=False)


if __name__ == "__main__":
    main()
