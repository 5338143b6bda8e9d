"""What a zygote would give envd: a fork of a pre-imported envd against a fresh exec.

Run as root from the repository:

    .venv/bin/python bench/envd_zygote.py [--bundle DIR] [--runs 9]

A measurement for issue 19's zygote lever (ADR 26), not the zygote: both envds run on the
host through the bundle's own loader, in no namespace and no cgroup. The *zygote* is the
bundle's interpreter that has imported all of envd (uvicorn, starlette, the Connect stack,
the process and watch code), run ``gc.collect()`` and ``gc.freeze()``, and then forks one
child per request; the child runs ``hutch.envd.main.main`` with the request's arguments.
The *exec* envd is today's start (``python3 -I -B -m hutch.envd``). The two take turns run
after run. What a real zygote adds per sandbox (entering six namespaces and a cgroup,
dropping capabilities, copying the seccomp filter, closing the host's descriptors) is a
few dozen syscalls and is not measured here.

Memory is read from ``/proc/PID/smaps_rollup`` once each envd has served ``/init`` and one
``commands.run("true")`` through the official SDK, then idled: USS (``Private_Clean +
Private_Dirty``) is what only that process holds, about what its memory cgroup is charged
(a page is charged to the cgroup that first touched it: the zygote's pages to the node's),
PSS shares the rest among the processes that map it (here the zygote and one child).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from _table import print_table
from envd_start import REPO, _build, _cpu_ns, _free_port, _health, _python, _smaps, _stop

#: The zygote: import everything a request could need, freeze the heap, fork per line of
#: stdin (a JSON argv for envd), answer each with the child's pid.
_ZYGOTE = """
import gc, json, os, signal, sys
import hutch.envd.main as envd_main
envd_main._uvicorn()
import hutch.envd.rpc.services, hutch.envd.process.manager, hutch.envd.filesystem.watcher
import uvicorn.lifespan.on, uvicorn.protocols.http.h11_impl, uvicorn.loops.asyncio
gc.collect()
gc.freeze()
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
print("ready", flush=True)
for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # envd waits for its processes
        null = os.open("/dev/null", os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.setsid()
        os._exit(envd_main.main(json.loads(line)))
    print(pid, flush=True)
"""


def _envd_args(port: int, state: Path) -> list[str]:
    return ["--host", "127.0.0.1", "--port", str(port), "--state-dir", str(state),
            "--log-level", "warning"]  # fmt: skip


class Zygote:
    """The pre-imported envd, forking one child per :meth:`start`."""

    def __init__(self, bundle: Path) -> None:
        self.proc = subprocess.Popen(
            [*_python(bundle), "-B", "-c", _ZYGOTE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdin is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise SystemExit("the zygote did not start")

    def start(self, state: Path) -> tuple[int, int, float, float]:
        """Fork a child envd; (pid, port, wall seconds to first 204, its CPU seconds)."""
        assert self.proc.stdout is not None and self.proc.stdin is not None
        port = _free_port()
        t0 = time.perf_counter()
        self.proc.stdin.write(json.dumps(_envd_args(port, state)) + "\n")
        self.proc.stdin.flush()
        pid = int(self.proc.stdout.readline())
        while not _health(port):
            time.sleep(0.001)
        return pid, port, time.perf_counter() - t0, _cpu_ns(pid) / 1e9

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def _stop_child(pid: int) -> None:
    os.kill(pid, 15)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.01)  # the zygote is its parent and reaps it (it ignores SIGCHLD)


def _exec_start(bundle: Path, state: Path) -> tuple[subprocess.Popen[bytes], int, float, float]:
    port = _free_port()
    argv = [*_python(bundle), "-B", "-m", "hutch.envd", *_envd_args(port, state)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not _health(port):
        if proc.poll() is not None:
            raise SystemExit(f"{bundle}: envd exited during start")
        time.sleep(0.001)
    return proc, port, time.perf_counter() - t0, _cpu_ns(proc.pid) / 1e9


def _exercise(port: int) -> None:
    """/init, one command through the official SDK, then idle."""
    url = f"http://127.0.0.1:{port}"
    body = json.dumps({"envVars": {"A": "1"}}).encode()
    urllib.request.urlopen(urllib.request.Request(url + "/init", data=body), timeout=30)
    os.environ.update(E2B_DEBUG="true", E2B_SANDBOX_URL=url, E2B_API_KEY="e2b_" + "0" * 40)
    from e2b import Sandbox

    assert Sandbox.create().commands.run("true", user="root").exit_code == 0
    time.sleep(2)


def _mem_row(mem: dict[str, float]) -> str:
    uss = mem["Private_Clean"] + mem["Private_Dirty"]
    return f"{mem['Rss']:.1f} / {mem['Pss']:.1f} / {uss:.1f} MiB"


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="default: one built from this checkout")
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/envd_zygote.py needs root (envd serves as root)")
    work = Path(tempfile.mkdtemp(prefix="hutch-bench-zygote-", dir="/var/tmp"))
    zygote = None
    try:
        bundle = args.bundle or _build(work / "bundle", REPO / "src" / "hutch")
        t0 = time.perf_counter()
        zygote = Zygote(bundle)
        zygote_wall = time.perf_counter() - t0
        zygote_cpu = _cpu_ns(zygote.proc.pid) / 1e9
        s: dict[str, list[float]] = collections.defaultdict(list)
        for run in range(args.runs):
            proc, _, wall, cpu = _exec_start(bundle, work / f"exec-{run}")
            _stop(proc)
            s["exec_wall"].append(wall)
            s["exec_cpu"].append(cpu)
            pid, _, wall, cpu = zygote.start(work / f"fork-{run}")
            _stop_child(pid)
            s["fork_wall"].append(wall)
            s["fork_cpu"].append(cpu)
        proc, port, _, _ = _exec_start(bundle, work / "exec-mem")
        try:
            _exercise(port)
            exec_mem = _smaps(proc.pid)
        finally:
            _stop(proc)
        pid, port, _, _ = zygote.start(work / "fork-mem")
        try:
            _exercise(port)
            fork_mem = _smaps(pid)
            zygote_mem = _smaps(zygote.proc.pid)
        finally:
            _stop_child(pid)
        rows = [
            ("exec: start to first `/health` 204, CPU / wall",
             f"{_ms(s['exec_cpu'])} / {_ms(s['exec_wall'])}"),
            ("fork of the zygote: request to first `/health` 204, child CPU / wall",
             f"{_ms(s['fork_cpu'])} / {_ms(s['fork_wall'])}"),
            ("exec: idle after /init + one command, RSS / PSS / USS", _mem_row(exec_mem)),
            ("fork: idle after /init + one command, RSS / PSS / USS", _mem_row(fork_mem)),
            ("the zygote itself (once per node), RSS / PSS / USS", _mem_row(zygote_mem)),
            ("the zygote's own start (once per node), CPU / wall",
             f"{zygote_cpu * 1000:.0f} ms / {zygote_wall * 1000:.0f} ms"),
        ]  # fmt: skip
        print_table(
            f"envd: exec against a zygote's fork (median of {args.runs}, {os.cpu_count()} "
            f"CPUs, load {os.getloadavg()[0]:.1f})",
            rows,
            ("measure", "value"),
        )
    finally:
        if zygote is not None:
            zygote.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
