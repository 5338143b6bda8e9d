"""Measure the envd bundle for docs/envd-bundle.md (a tool, not a test: never asserts on time).

Run as root: ``.venv/bin/python tests/integration/envd_bundle/measure_bundle.py [--bundle DIR]``.
It builds a bundle (unless given one), mounts it read-only into an empty rootfs (no libc, no
shell, no /proc) and into a busybox one, and prints JSON with:

- size of the bundle;
- ``python3 -c pass`` wall time inside the empty rootfs (median of many runs, warm cache);
- wall time of ``python3 -c "import <envd's dependency set>"``, with the bundle's pages evicted
  from the page cache first (cold: ``posix_fadvise(DONTNEED)`` on the bundle's files only, so
  other users of the machine keep theirs) and warm;
- RSS and private memory of an idle process that imported the set and serves HTTP, and of the
  real envd (when this checkout has it), read from /proc after one request was answered.
"""

from __future__ import annotations

import argparse
import ctypes
import http.client
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from test_envd_bundle import IMPORTS, SERVE_SCRIPT

from hutch.node.envd_bundle import build_envd_bundle, envd_argv
from hutch.shared.paths import ENVD_BUNDLE_DIR_IN_SANDBOX, ENVD_PORT

PYTHON = f"{ENVD_BUNDLE_DIR_IN_SANDBOX}/bin/python3"


def _evict(bundle: Path) -> None:
    for path in bundle.rglob("*"):
        if path.is_file() and not path.is_symlink():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _timed(argv: list[str], cpu: list[float] | None = None) -> float:
    """Wall milliseconds of one run; its CPU milliseconds (user+sys) go to ``cpu``.

    CPU time is reported beside wall time because the machine is shared: other work
    stretches wall time, hardly CPU time.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        argv,
        check=True,
        stdout=subprocess.DEVNULL,
        env={"PATH": os.environ.get("PATH", os.defpath)},
    )
    wall = (time.perf_counter() - start) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if cpu is not None:
        used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        cpu.append(used * 1000)
    return wall


def _memory(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            out["rss_kb"] = int(line.split()[1])
    # Anonymous memory is each sandbox's own; the rest of RSS is the bundle's file pages,
    # which every sandbox mounting the same bundle shares through the page cache.
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Anonymous:"):
            out["anonymous_kb"] = int(line.split()[1])
    return out


def _poll_health(netns: str, proc: subprocess.Popen[str]) -> None:
    """GET /health from a thread that joined ``netns`` until it answers 204 (every 5 ms).

    In-process, so the start-to-ready time is not blurred by starting a client each try.
    """
    done: list[BaseException | None] = []

    def poll() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            with open(f"/var/run/netns/{netns}") as ns:
                if libc.setns(ns.fileno(), 0x40000000) != 0:  # CLONE_NEWNET, this thread only
                    raise OSError(ctypes.get_errno(), "setns")
            while proc.poll() is None:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", ENVD_PORT, timeout=30)
                    conn.request("GET", "/health")
                    if conn.getresponse().status == 204:
                        done.append(None)
                        return
                except OSError:
                    time.sleep(0.005)
            raise RuntimeError(f"server exited with {proc.returncode}")
        except BaseException as exc:
            done.append(exc)

    thread = threading.Thread(target=poll)
    thread.start()
    thread.join()
    if done and done[0] is not None:
        raise done[0]


def _serve_and_measure(argv: list[str], netns: str) -> tuple[float, dict[str, int]]:
    begin = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        env={"PATH": os.environ.get("PATH", os.defpath)},
    )
    try:
        _poll_health(netns, proc)
        return (time.perf_counter() - begin) * 1000, _memory(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundle", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="envd-bundle-measure-"))
    bundle = args.bundle or build_envd_bundle(work / "bundle").path
    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file() and not p.is_symlink())
    roots = {"empty": work / "empty", "busybox": work / "busybox"}
    mounts = []
    netns = f"hutchbundle-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        for kind, root in roots.items():
            target = root / ENVD_BUNDLE_DIR_IN_SANDBOX.lstrip("/")
            target.mkdir(parents=True)
            subprocess.run(["mount", "--bind", str(bundle), str(target)], check=True)
            mounts.append(target)
            subprocess.run(["mount", "-o", "remount,bind,ro", str(target)], check=True)
            if kind == "busybox":
                (root / "bin").mkdir()
                (root / "bin" / "busybox").write_bytes(Path("/bin/busybox").read_bytes())
                (root / "tmp").mkdir()
                (root / "proc").mkdir()
                (root / "etc").mkdir()
                (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
        empty = ["chroot", str(roots["empty"])]
        _timed([*empty, PYTHON, "-I", "-c", "pass"])
        start_cpu: list[float] = []
        start = [_timed([*empty, PYTHON, "-I", "-c", "pass"], start_cpu) for _ in range(args.runs)]
        imports = [*empty, PYTHON, "-I", "-c", IMPORTS]
        cold: list[float] = []
        cold_cpu: list[float] = []
        for _ in range(max(3, args.runs // 4)):
            _evict(bundle)
            cold.append(_timed(imports, cold_cpu))
        warm_cpu: list[float] = []
        warm = [_timed(imports, warm_cpu) for _ in range(args.runs)]
        standin = ["ip", "netns", "exec", netns, *empty, PYTHON, "-I", "-B", "-c", SERVE_SCRIPT]
        result: dict[str, object] = {
            "size_mb": round(size / 1e6, 1),
            "python_c_pass_ms_median": round(statistics.median(start), 1),
            "python_c_pass_cpu_ms_median": round(statistics.median(start_cpu), 1),
            "import_set_cold_ms_median": round(statistics.median(cold), 1),
            "import_set_cold_cpu_ms_median": round(statistics.median(cold_cpu), 1),
            "import_set_warm_ms_median": round(statistics.median(warm), 1),
            "import_set_warm_cpu_ms_median": round(statistics.median(warm_cpu), 1),
            "import_set_warm_ms_min": round(min(warm), 1),
        }
        standin_runs = [_serve_and_measure(standin, netns) for _ in range(5)]
        result["standin_start_to_first_204_ms_median_warm"] = round(
            statistics.median(ms for ms, _ in standin_runs), 1
        )
        result["standin_serving_memory"] = standin_runs[-1][1]
        site = bundle / "lib" / "python3.11" / "site-packages" / "hutch" / "envd" / "__main__.py"
        if site.is_file():
            envd = [
                *("ip", "netns", "exec", netns, "unshare", f"--mount-proc={roots['busybox']}/proc"),
                *("chroot", str(roots["busybox"]), *envd_argv()),
                *("--host", "127.0.0.1", "--port", str(ENVD_PORT), "--state-dir", "/tmp/s"),
            ]
            envd_runs = [_serve_and_measure(envd, netns) for _ in range(5)]
            result["envd_start_to_first_204_ms_median_warm"] = round(
                statistics.median(ms for ms, _ in envd_runs), 1
            )
            result["envd_serving_memory"] = envd_runs[-1][1]
        print(json.dumps(result, indent=2))
    finally:
        unmounted = [
            subprocess.run(["umount", str(t)], check=False).returncode == 0 for t in mounts
        ]
        subprocess.run(["ip", "netns", "delete", netns], check=False)
        if all(unmounted):  # never delete through a mount that is still there
            shutil.rmtree(roots["empty"], ignore_errors=True)
            shutil.rmtree(roots["busybox"], ignore_errors=True)
            if args.bundle is None:
                shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
