"""The cost of metrics and tracing: create and command round trip with both on vs. off.

Run as root from the repository:

    .venv/bin/python bench/observability.py [-n 10] [--runs 20] [--rounds 2]

One private ``hutch serve`` (``bench/_instance.py``: own home, ports and host names
``hbn*``) is restarted between phases, alternating **off** (no ``HUTCH_METRICS_PORT``, no
OTLP endpoint: the no-op tracer) and **on** (``/metrics`` served and scraped every second,
spans exported by OTLP/HTTP to a sink in this process that answers 200), ``--rounds``
times each, so drift hits both alike. Each phase creates ``-n`` busybox sandboxes (cold: no
warm pool) with the official SDK, runs ``--runs`` ``echo`` commands in each and kills it.
Prints one table; removes everything it made, also when a step fails.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import _instance
import httpx
from _instance import new_instance
from _table import print_table
from e2b import Sandbox

from hutch.node.templates.busybox import build_busybox


class _Sink(BaseHTTPRequestHandler):
    """An OTLP/HTTP collector that accepts and drops every export."""

    received = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).received += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _phase(n: int, runs: int) -> tuple[list[float], list[float]]:
    creates: list[float] = []
    commands: list[float] = []
    for _ in range(n):
        started = time.perf_counter()
        sbx = Sandbox.create("busybox", timeout=120)
        creates.append(time.perf_counter() - started)
        try:
            for _ in range(runs):
                started = time.perf_counter()
                sbx.commands.run("echo hi")
                commands.append(time.perf_counter() - started)
        finally:
            sbx.kill()
    return creates, commands


def _scrape(url: str, stop: threading.Event, count: list[int]) -> None:
    while not stop.wait(1.0):
        try:
            httpx.get(url, timeout=5).raise_for_status()
            count[0] += 1
        except httpx.HTTPError:
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10, help="creates per phase")
    parser.add_argument("--runs", type=int, default=20, help="commands.run per sandbox")
    parser.add_argument("--rounds", type=int, default=2, help="off/on phase pairs")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/observability.py needs root (runc, network namespaces)")

    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{sink.server_address[1]}"
    home = Path(tempfile.mkdtemp(prefix="hutch-bench-obs-", dir="/var/tmp"))
    build_busybox(home / "templates")
    inst = new_instance(home=home, extra_env={"HUTCH_NODE_POOL_SIZE": ""})
    metrics_port = inst.metrics_port
    results: dict[str, tuple[list[float], list[float]]] = {"off": ([], []), "on": ([], [])}
    scrapes = [0]
    try:
        key = inst.hutch("keys", "create").strip()
        os.environ.update(
            E2B_API_URL=inst.api_url, E2B_SANDBOX_URL=inst.sandbox_url, E2B_API_KEY=key
        )
        for k in [k for k in os.environ if "proxy" in k.lower()]:
            del os.environ[k]
        for _ in range(args.rounds):
            for mode in ("off", "on"):
                if mode == "on":
                    inst.metrics_port = metrics_port
                    inst.extra_env["HUTCH_OTLP_ENDPOINT"] = endpoint
                else:
                    inst.metrics_port = None
                    inst.extra_env.pop("HUTCH_OTLP_ENDPOINT", None)
                inst.start()
                stop = threading.Event()
                scraper = None
                if mode == "on":
                    scraper = threading.Thread(
                        target=_scrape, args=(inst.metrics_url, stop, scrapes), daemon=True
                    )
                    scraper.start()
                try:
                    creates, commands = _phase(args.n, args.runs)
                finally:
                    stop.set()
                    if scraper is not None:
                        scraper.join()
                    inst.stop()  # flushes the batched spans to the sink
                results[mode][0].extend(creates)
                results[mode][1].extend(commands)
    finally:
        if inst.proc is not None:
            inst.stop()
        inst.destroy_everything()
        _instance.remove_home(home)
        sink.shutdown()

    def ms(values: list[float], q: float | None = None) -> str:
        value = statistics.median(values) if q is None else _pct(values, q)
        return f"{value * 1000:.1f} ms"

    rows = []
    for what, index in (("create (cold busybox)", 0), ("commands.run round trip", 1)):
        off, on = results["off"][index], results["on"][index]
        rows.append([
            what, ms(off), ms(on), ms(off, 0.95), ms(on, 0.95),
            f"{(statistics.median(on) / statistics.median(off) - 1) * 100:+.1f} %",
        ])  # fmt: skip
    print_table(
        f"metrics + tracing off vs on ({os.cpu_count()} CPUs, runc; {len(results['on'][0])} "
        f"creates and {len(results['on'][1])} commands per mode; {scrapes[0]} scrapes, "
        f"{_Sink.received} OTLP exports received)",
        rows,
        ["operation", "off p50", "on p50", "off p95", "on p95", "p50 change"],
    )


if __name__ == "__main__":
    main()
