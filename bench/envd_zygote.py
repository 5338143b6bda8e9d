"""What a zygote would give envd: a fork of a pre-imported envd against a fresh exec.

Run as root from the repository:

    .venv/bin/python bench/envd_zygote.py [--bundle DIR] [--runs 9] [--in-runc]

A measurement for issue 19's zygote lever (ADR 32 and its addendum). The *zygote* is the
bundle's interpreter (started on the host through the bundle's own loader) that has imported
all of envd (``hutch.node.zygote.preimport``) (uvicorn, starlette, the Connect stack, the
process and watch code), run ``gc.collect()`` and ``gc.freeze()``, and then forks one child
per request; the child runs ``hutch.envd.main.main`` with the request's arguments. The
*exec* envd is today's start (``python3 -I -B -m hutch.envd``). The two take turns run after
run.

On the host (always): both envds in no namespace and no cgroup. Memory is read from
``/proc/PID/smaps_rollup`` once each has served ``/init`` and one ``commands.run("true")``
through the official SDK, then idled: USS (``Private_Clean + Private_Dirty``) is what only
that process holds, PSS shares the rest among the processes that map it (here the zygote
and one child).

``--in-runc``: each envd also runs in a runc container made by ``build_spec`` (a copy of the
busybox rootfs, hutch's capabilities, seccomp profile and masks, the bundle mounted at its
host path so the zygote's later imports resolve there too): exec'd as the container's PID 1,
or forked by ``hutch.node.zygote`` (its ``serve`` on a socket pair, requests from its
``ZygoteClient`` as a node would send them: namespaces, cgroups and log as descriptors) into
a container whose PID 1 is ``sleep``, entering it as ADR 32 describes (its cgroups, six
namespaces, two more forks so that PID 1 adopts envd, PID 1's seccomp filter read with
ptrace, its rlimits, credentials, umask, capabilities, ``oom_score_adj``). The forked envd
is checked with ``zygote.differences`` against PID 1 (credentials, capabilities, seccomp,
no-new-privileges, umask, rlimits, namespaces, cgroups, parent), and it must serve
``/init``, a Connect ``Stat`` and a download of ``/etc/hostname``. Its memory is the
container's memory cgroup after those and an idle moment, above what it held before envd
(exec: the created container, ``runc init`` waiting; fork: ``sleep`` as PID 1): what the
sandbox is charged for envd."""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
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
from envd_start import REPO, _build, _cpu_ns, _free_port, _health, _python, _smaps, _stop

from hutch.node import zygote
from hutch.node.bundle import BindMount, SandboxSpec, build_spec

#: On the host: the zygote module's source, then a loop that forks a child per line of stdin
#: (JSON: envd's argv) without entering anything, answering with the child's pid.
_HOST_ZYGOTE = """
import json, os, signal, sys
run = preimport()
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
print("ready", flush=True)
for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # envd waits for its processes
        null = os.open("/dev/null", os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.setsid()
        os._exit(run(request["argv"]))
    print(pid, flush=True)
"""


def _envd_args(port: int, state: Path) -> list[str]:
    return ["--host", "127.0.0.1", "--port", str(port), "--state-dir", str(state),
            "--log-level", "warning"]  # fmt: skip


class HostZygote:
    """The pre-imported envd on the host, forking one child per :meth:`start`."""

    def __init__(self, bundle: Path) -> None:
        self.proc = subprocess.Popen(
            [*_python(bundle), "-B", "-c", Path(zygote.__file__).read_text() + _HOST_ZYGOTE],
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
        self.proc.stdin.write(json.dumps({"argv": _envd_args(port, state)}) + "\n")
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


#: Waits for "go" on stdin, then polls /health on loopback (in the container's network
#: namespace, entered with nsenter), prints the seconds it took; then /init on "init".
_POLLER = """
import json, socket, sys, time, urllib.request
port = int(sys.argv[1])
def healthy():
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"GET /health HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
            return s.recv(64).startswith(b"HTTP/1.1 204")
    except OSError:
        return False
print("ready", flush=True)
sys.stdin.readline()
t0 = time.perf_counter()
while not healthy():
    time.sleep(0.001)
print(time.perf_counter() - t0, flush=True)
sys.stdin.readline()
req = urllib.request.Request(f"http://127.0.0.1:{port}/init", data=b'{"envVars": {"A": "1"}}')
status = urllib.request.urlopen(req, timeout=30).status
stat = urllib.request.Request(
    f"http://127.0.0.1:{port}/filesystem.Filesystem/Stat", data=b'{"path": "/"}',
    headers={"Content-Type": "application/json", "Connect-Protocol-Version": "1",
             "Authorization": "Basic cm9vdDo="})
kind = json.loads(urllib.request.urlopen(stat, timeout=60).read())["entry"]["type"]
url = f"http://127.0.0.1:{port}/files?path=/etc/hostname&username=root"
hostname = urllib.request.urlopen(url, timeout=30).read().decode().strip()
print(json.dumps([status, kind, hostname]), flush=True)
"""

_CGROUP_PARENT = "hutch-bench-zygote"


def _cgroup_memory(cid: str) -> int:
    for name in ("memory/" + _CGROUP_PARENT + f"/{cid}/memory.usage_in_bytes",
                 f"{_CGROUP_PARENT}/{cid}/memory.current"):  # fmt: skip
        path = Path("/sys/fs/cgroup") / name
        if path.is_file():
            return int(path.read_text())
    raise SystemExit(f"no memory cgroup for {cid}")


class Container:
    """A runc container from ``build_spec`` (busybox rootfs, hutch's capabilities, seccomp
    and masks) with the bundle mounted at its host path, so the zygote's imports resolve."""

    def __init__(self, work: Path, bundle: Path, cid: str, args: list[str]) -> None:
        self.cid, self.runc = cid, ["runc", "--root", str(work / "runc")]
        rootfs = work / f"rootfs-{cid}"
        shutil.copytree(Path("/var/lib/hutch/templates/busybox/rootfs"), rootfs, symlinks=True)
        (rootfs / "etc" / "hostname").write_text(f"{cid}\n")  # as a node writes it
        spec = SandboxSpec(
            sandbox_id=cid, rootfs=rootfs, args=args,
            bind_mounts=(BindMount(bundle, str(bundle), read_only=True),),
        )  # fmt: skip
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        config = build_spec(spec, cgroup_parent=f"/{_CGROUP_PARENT}", max_nofile=hard)
        self.bundle_dir = work / f"oci-{cid}"
        self.bundle_dir.mkdir()
        (self.bundle_dir / "config.json").write_text(json.dumps(config))
        with open(os.devnull, "r+b") as null:
            subprocess.run([*self.runc, "create", "--bundle", str(self.bundle_dir), cid],
                           stdin=null, stdout=null, check=True)  # fmt: skip
        state = subprocess.run([*self.runc, "state", cid], capture_output=True, check=True)
        self.pid = json.loads(state.stdout)["pid"]

    def start(self) -> None:
        subprocess.run([*self.runc, "start", self.cid], check=True)

    def poller(self, port: int) -> subprocess.Popen[str]:
        """A /health poller in the container's network namespace, once it is ready."""
        poller = subprocess.Popen(
            ["nsenter", f"--net=/proc/{self.pid}/ns/net", "--", sys.executable, "-c", _POLLER,
             str(port)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert poller.stdout is not None and poller.stdout.readline().strip() == "ready"
        return poller

    def delete(self) -> None:
        subprocess.run([*self.runc, "delete", "--force", self.cid], capture_output=True)


def _ask(poller: subprocess.Popen[str], line: str) -> str:
    assert poller.stdin is not None and poller.stdout is not None
    poller.stdin.write(line + "\n")
    poller.stdin.flush()
    return poller.stdout.readline().strip()


class NodeZygote:
    """``hutch.node.zygote`` as a node runs it: its ``serve`` on a socket pair, requests
    through a ``ZygoteClient`` (the namespaces, cgroups and log sent as descriptors)."""

    def __init__(self, bundle: Path, work: Path) -> None:
        mine, theirs = zygote.start_socket()
        self.proc = subprocess.Popen(
            zygote.zygote_argv([*_python(bundle), "-B"]), stdin=theirs, stdout=subprocess.DEVNULL
        )
        theirs.close()
        self.sock = mine
        zygote.wait_ready(mine)
        self.client = zygote.ZygoteClient(mine)
        self.log = os.open(work / "zygote-envd.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        self.filters: list[str] | None = None

    def enter(self, init_pid: int, argv: list[str]) -> int:
        if self.filters is None:  # once per profile: every container has the same
            self.filters = zygote.seccomp_filters(init_pid)
        return self.client.fork_envd(
            init_pid, argv=argv, env={"PATH": "/usr/bin:/bin"}, log_fd=self.log,
            filters=self.filters,
        )  # fmt: skip

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.proc.wait(timeout=10)
        os.close(self.log)


def _in_runc(bundle: Path, node_zygote: NodeZygote, work: Path, runs: int) -> list[tuple[str, str]]:
    """exec'd envd as a container's PID 1 against a zygote's fork into a container."""
    port, args = 49983, ["--host", "127.0.0.1", "--log-level", "warning"]
    envd = [*_python(bundle), "-B", "-m", "hutch.envd", "--port", str(port), *args]
    s: dict[str, list[float]] = collections.defaultdict(list)
    diffs: set[str] = set()
    for run in range(runs):
        for mode in ("exec", "fork"):
            c = Container(work, bundle, f"hbz-{mode}-{run}",
                          envd if mode == "exec" else ["/bin/sleep", "1000000"])  # fmt: skip
            try:
                if mode == "fork":
                    c.start()
                base = _cgroup_memory(c.cid)
                poller = c.poller(port)
                if mode == "exec":
                    t0 = time.perf_counter()
                    c.start()
                else:
                    t0 = time.perf_counter()
                    envd_pid = node_zygote.enter(c.pid, ["--port", str(port), *args])
                _ask(poller, "go")
                s[f"{mode}_wall"].append(time.perf_counter() - t0)
                answers = json.loads(_ask(poller, "init"))
                if answers != [204, "FILE_TYPE_DIRECTORY", c.cid]:
                    raise SystemExit(f"envd in {c.cid} answered {answers}")
                if mode == "fork":
                    diffs.update(zygote.differences(envd_pid, c.pid))
                poller.wait(timeout=10)
                time.sleep(2)
                s[f"{mode}_mem"].append((_cgroup_memory(c.cid) - base) / 2**20)
            finally:
                c.delete()
    mib = statistics.median
    return [
        ("in runc: exec'd envd as PID 1, `runc start` to first `/health` 204",
         _ms(s["exec_wall"])),
        ("in runc: zygote fork entering the container, request to first `/health` 204",
         _ms(s["fork_wall"])),
        ("in runc: memory cgroup after the requests, idle, above it before envd: exec / fork",
         f"{mib(s['exec_mem']):.1f} / {mib(s['fork_mem']):.1f} MiB"),
        ("in runc: forked envd's credentials, capabilities, seccomp, rlimits, namespaces, "
         "cgroups, parent against PID 1's",
         "differ: " + ", ".join(sorted(diffs)) if diffs else "equal"),
    ]  # fmt: skip


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
    parser.add_argument(
        "--in-runc",
        action="store_true",
        help="also start each envd in a runc container (exec'd as PID 1, or forked into it)",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/envd_zygote.py needs root (envd serves as root)")
    work = Path(tempfile.mkdtemp(prefix="hutch-bench-zygote-", dir="/var/tmp"))
    host: HostZygote | None = None
    node_zygote: NodeZygote | None = None
    try:
        bundle = args.bundle or _build(work / "bundle", REPO / "src" / "hutch")
        t0 = time.perf_counter()
        host = HostZygote(bundle)
        zygote_wall = time.perf_counter() - t0
        zygote_cpu = _cpu_ns(host.proc.pid) / 1e9
        s: dict[str, list[float]] = collections.defaultdict(list)
        for run in range(args.runs):
            proc, _, wall, cpu = _exec_start(bundle, work / f"exec-{run}")
            _stop(proc)
            s["exec_wall"].append(wall)
            s["exec_cpu"].append(cpu)
            pid, _, wall, cpu = host.start(work / f"fork-{run}")
            _stop_child(pid)
            s["fork_wall"].append(wall)
            s["fork_cpu"].append(cpu)
        proc, port, _, _ = _exec_start(bundle, work / "exec-mem")
        try:
            _exercise(port)
            exec_mem = _smaps(proc.pid)
        finally:
            _stop(proc)
        pid, port, _, _ = host.start(work / "fork-mem")
        try:
            _exercise(port)
            fork_mem = _smaps(pid)
            zygote_mem = _smaps(host.proc.pid)
        finally:
            _stop_child(pid)
        rows = []
        if args.in_runc:
            node_zygote = NodeZygote(bundle, work)
            rows = _in_runc(bundle, node_zygote, work, args.runs)
        rows += [
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
        for z in (host, node_zygote):
            if z is not None:
                z.close()
        for parent in Path("/sys/fs/cgroup").glob(f"*/{_CGROUP_PARENT}"):
            parent.rmdir()  # runc removed the containers' own cgroups
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
