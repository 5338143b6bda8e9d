"""Measure ``Sandbox.create()`` to ready through a real ``hutch serve`` (median of 10).

Run as root: ``.venv/bin/python -m tests.e2e.measure_serve``. Ready = ``create`` returned
(the api answers once envd answered ``/health`` and took ``/init``); the first
``commands.run("true")`` through the proxy is timed separately.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

from hutch.node.templates.busybox import build_busybox

from .serveproc import Serve, nodehelpers


def main(n: int = 10) -> None:
    home = Path(tempfile.mkdtemp(prefix="hutch-measure-"))
    build_busybox(home / "templates")
    serve = Serve(home=home, envd_bundle=nodehelpers.cached_envd_bundle())
    os.environ.update(
        E2B_API_URL=serve.api_url, E2B_SANDBOX_URL=serve.sandbox_url,
        E2B_API_KEY=serve.hutch("keys", "create").strip(),
    )  # fmt: skip
    from e2b import Sandbox

    serve.start()
    try:
        creates, runs = [], []
        for _ in range(n):
            t0 = time.perf_counter()
            sbx = Sandbox.create("busybox", timeout=60)
            t1 = time.perf_counter()
            sbx.commands.run("true")
            t2 = time.perf_counter()
            sbx.kill()
            creates.append((t1 - t0) * 1000)
            runs.append((t2 - t1) * 1000)
        for name, values in (("create to ready", creates), ("first commands.run('true')", runs)):
            print(f"{name}: median {statistics.median(values):.0f} ms "
                  f"(min {min(values):.0f}, max {max(values):.0f}, n={n})")  # fmt: skip
    finally:
        serve.stop()
        serve.destroy_everything()


if __name__ == "__main__":
    main()
