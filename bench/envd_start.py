"""envd's start cost from its bundle: CPU to import, CPU and wall to first /health, memory.

Run as root from the repository:

    .venv/bin/python bench/envd_start.py [--bundle DIR]... [--runs 15]

Each ``--bundle`` (default: one built from this checkout into a temporary directory) is
started on the host through its own loader (``DIR/lib/ld-linux-x86-64.so.2 DIR/bin/python3
-I -B``, as docs/envd-bundle.md says), the bundles taking turns run after run so that the
load of a shared machine falls on all of them alike. CPU time (``/proc/PID/schedstat``, in
nanoseconds) is the number to compare on a loaded machine; wall time is given beside it.
Memory is read from ``/proc/PID/smaps_rollup`` once envd has served ``/init`` and one
``commands.run("true")`` through the official SDK, then idled: PSS counts the bundle's
shared file pages once per process that maps them, so PSS and the anonymous part are what
each sandbox costs, RSS is what ``top`` shows.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _table import print_table

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _python(bundle: Path) -> list[str]:
    return [str(bundle / "lib" / "ld-linux-x86-64.so.2"), str(bundle / "bin" / "python3"), "-I"]


def _cpu_ns(pid: int) -> int:
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


def _import_code(module: str) -> str:
    """``import module``; for envd's main also what ``main()`` imports first (uvicorn's
    Config and Server, ADR 32), so bundles from before and after that change compare."""
    if module != "hutch.envd.main":
        return f"import {module}"
    return "import hutch.envd.main as m; getattr(m, '_uvicorn', lambda: None)()"


def _import_cpu(bundle: Path, module: str) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of a fresh interpreter that imports ``module``."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([*_python(bundle), "-B", "-c", _import_code(module)])
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{bundle}: import {module} failed")
    return usage.ru_utime + usage.ru_stime, wall


def _health(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 204")
    except OSError:
        return False


def _start(bundle: Path, state: Path) -> tuple[subprocess.Popen[bytes], int, float, float]:
    """Start envd; (process, port, wall seconds to first 204, CPU seconds spent by then)."""
    port = _free_port()
    argv = [*_python(bundle), "-B", "-m", "hutch.envd", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--state-dir", str(state), "--log-level", "warning"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not _health(port):
        if proc.poll() is not None:
            raise SystemExit(f"{bundle}: envd exited during start")
        time.sleep(0.001)
    return proc, port, time.perf_counter() - t0, _cpu_ns(proc.pid) / 1e9


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(timeout=10)


def _smaps(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        out[key] = int(value.split()[0]) / 1024
    return out


def _memory(bundle: Path, state: Path) -> dict[str, float]:
    """Rss/Pss/Anonymous (MiB) of an envd that served /init and one command, then idled."""
    proc, port, _, _ = _start(bundle, state)
    try:
        url = f"http://127.0.0.1:{port}"
        body = json.dumps({"envVars": {"A": "1"}}).encode()
        urllib.request.urlopen(urllib.request.Request(url + "/init", data=body), timeout=30)
        os.environ.update(E2B_DEBUG="true", E2B_SANDBOX_URL=url, E2B_API_KEY="e2b_" + "0" * 40)
        from e2b import Sandbox

        sbx = Sandbox.create()
        assert sbx.commands.run("true", user="root").exit_code == 0
        time.sleep(2)
        return _smaps(proc.pid)
    finally:
        _stop(proc)


def _importtime(bundle: Path, module: str, runs: int) -> dict[str, float]:
    """Median self time (ms) per top-level package of ``-X importtime`` over ``runs``."""
    per: dict[str, list[float]] = collections.defaultdict(list)
    for _ in range(runs):
        err = subprocess.run(
            [*_python(bundle), "-B", "-X", "importtime", "-c", _import_code(module)],
            capture_output=True,
            text=True,
            check=True,
        ).stderr
        acc: collections.Counter[str] = collections.Counter()
        for line in err.splitlines():
            if not line.startswith("import time:") or "self [us]" in line:
                continue
            self_us, _, name = line.removeprefix("import time:").split("|")
            name = name.strip()
            top = name.split(".")[0]
            if top == "hutch":
                top = ".".join(name.split(".")[:3])
            acc[top] += int(self_us)
        for key in set(per) | set(acc):
            per[key].append(acc.get(key, 0) / 1000)
    return {key: statistics.median(v + [0] * (runs - len(v))) for key, v in per.items()}


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f} ms"


def _build(out: Path, source: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "hutch.node.envd_bundle",
            "build",
            "--out",
            str(out),
            "--source",
            str(source),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", action="append", type=Path, default=[])
    parser.add_argument(
        "--source",
        action="append",
        type=Path,
        default=[],
        help="a hutch package directory (src/hutch) to build a bundle from, for comparison",
    )
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--module", default="hutch.envd.main", help="the import to time")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/envd_start.py needs root (envd serves as root)")
    work = Path(tempfile.mkdtemp(prefix="hutch-bench-start-", dir="/var/tmp"))
    try:
        bundles = list(args.bundle)
        for i, source in enumerate(args.source):
            bundles.append(_build(work / f"bundle-{i}", source))
        if not bundles:
            bundles.append(_build(work / "bundle", REPO / "src" / "hutch"))
        names = {b: str(b) for b in args.bundle}
        names.update(
            {
                b: f"built from {src}"
                for b, src in zip(bundles[len(args.bundle) :], args.source, strict=False)
            }
        )
        names.setdefault(bundles[0], "built from this checkout")
        samples: dict[Path, dict[str, list[float]]] = {
            b: collections.defaultdict(list) for b in bundles
        }
        floor: dict[Path, list[float]] = collections.defaultdict(list)
        for run in range(args.runs):
            for b in bundles:
                floor[b].append(_import_cpu(b, "sys")[0])
                cpu, wall = _import_cpu(b, args.module)
                samples[b]["import_cpu"].append(cpu)
                samples[b]["import_wall"].append(wall)
                proc, _, wall, cpu = _start(b, work / f"state-{run}")
                _stop(proc)
                samples[b]["start_wall"].append(wall)
                samples[b]["start_cpu"].append(cpu)
        for b in bundles:
            mem = _memory(b, work / "state-mem")
            times = _importtime(b, args.module, max(3, args.runs // 3))
            s = samples[b]
            rows = [
                ("interpreter alone (`-c 'import sys'`), CPU", _ms(floor[b])),
                (f"`import {args.module}`, CPU / wall",
                 f"{_ms(s['import_cpu'])} / {_ms(s['import_wall'])}"),
                ("exec to first `/health` 204, CPU / wall",
                 f"{_ms(s['start_cpu'])} / {_ms(s['start_wall'])}"),
                ("idle after /init + one command: RSS / PSS / anonymous",
                 f"{mem['Rss']:.1f} / {mem['Pss']:.1f} / {mem['Anonymous']:.1f} MiB"),
            ]  # fmt: skip
            top = sorted(times.items(), key=lambda kv: -kv[1])[:12]
            total = sum(times.values())
            rows.append(("`-X importtime` self time, all modules (wall)", f"{total:.0f} ms"))
            rows += [(f"  of which {k}", f"{v:.0f} ms") for k, v in top]
            print_table(
                f"envd start, {names[b]} (median of {args.runs}, {os.cpu_count()} CPUs, "
                f"load {os.getloadavg()[0]:.1f})",
                rows,
                ("measure", "value"),
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
