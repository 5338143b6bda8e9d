"""The control plane's capacity: creates per second through real ``hutch api`` processes on
real PostgreSQL, with 1, 10 and 100 simulated nodes, beside the database's own floor.

    .venv/bin/python bench/capacity.py [--nodes 1,10,100] [--n 300] [--concurrency 32]
                                       [--apis 2] [--database-url postgresql://...]

A private PostgreSQL (``initdb`` in a temporary directory, default durability settings,
Unix socket only; as the ``postgres`` user when run as root) unless ``--database-url``
names a server where databases may be created. For each node count, on a fresh database:
the schema, a team, a template and an API key; ``--apis`` real ``hutch api`` processes
(``python -m hutch api``, nodes register with them, ADR 0025); the simulated nodes
(bench/_fakenodes.py: the real node API over the fakes of tests/fakes instead of runc,
each on its own Unix socket, registered and beating through the real ``Registrar``).
Then a warm-up (as many creates and kills as there are nodes, per api), ``--n`` creates
(``POST /sandboxes``, httpx, ``--concurrency`` at a time, round robin over the apis) and
as many kills (``DELETE``). While the creates run, ``pg_stat_activity`` is sampled every
20 ms for backends waiting on a lock (mean / max, and the commonest lock kinds), and the
CPU time the apis, the simulated nodes and PostgreSQL spent is read from ``/proc``. After
the creates the store must place exactly the created sandboxes, after the kills none; the
run fails otherwise. The floor: as many one-row ``INSERT`` transactions, as many at a
time, through the same driver on the same server, in the same run. ``--src DIR`` runs
the apis from another checkout's ``src`` (to compare two versions on one machine).
``--profile DIR`` records each api with py-spy (on ``PATH`` or beside this Python) while
the creates run, as collapsed stacks (``DIR/<nodes>-api-<i>.txt``, one line per stack and
its sample count) and prints the functions that take most of the apis' samples.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import httpx  # noqa: E402
from _fakenodes import TEMPLATE  # noqa: E402
from _table import print_table  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from hutch.api.models import NewTemplate, TemplateBuildState  # noqa: E402
from hutch.api.nodes_model import NodeStatus  # noqa: E402
from hutch.api.store.engine import create_engine  # noqa: E402
from hutch.api.store.sql import open_sql_store  # noqa: E402
from hutch.shared.ids import TemplateID  # noqa: E402

#: Nodes per simulated-node process (one event loop serves them all).
NODES_PER_PROCESS = 50
READY_S = 120.0


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids`` so far (gone ones count 0)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _children(parent: int) -> list[int]:
    """The processes whose parent is ``parent`` (a postmaster's backends)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if ppid == parent:
                    found.append(int(entry.name))
    return found


# ---- PostgreSQL ------------------------------------------------------------------------


class PrivatePostgres:
    """A throwaway server in a temporary directory (see the module docstring)."""

    def __init__(self) -> None:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
                      key=lambda p: int(p.parent.parent.name), reverse=True)  # fmt: skip
        if not bins:
            raise SystemExit("PostgreSQL not found: apt-get install -y postgresql-15")
        self.bindir = bins[0].parent
        self.base = Path(tempfile.mkdtemp(prefix="hutch-capacity-pg-"))
        os.chmod(self.base, 0o755)
        self.user = "postgres" if os.geteuid() == 0 else None
        (self.base / "run").mkdir()
        if self.user is not None:
            pw = pwd.getpwnam(self.user)
            for path in (self.base, self.base / "run"):
                os.chown(path, pw.pw_uid, pw.pw_gid)

    def _run(self, *args: str) -> None:
        done = subprocess.run([str(self.bindir / args[0]), *args[1:]], user=self.user,
                              cwd=self.base, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, check=False)  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"{args[0]} failed: {done.stderr.strip()}")

    def start(self) -> str:
        data, run = self.base / "data", self.base / "run"
        self._run("initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                  "--locale=C", "--no-sync")  # fmt: skip
        options = f"-c listen_addresses='' -c unix_socket_directories={run} -c max_connections=400"
        self._run("pg_ctl", "-D", str(data), "-l", str(self.base / "log"), "-o", options,
                  "-w", "start")  # fmt: skip
        return f"postgresql+asyncpg://postgres@/postgres?host={run}"

    def pids(self) -> list[int]:
        """The postmaster and its backends."""
        postmaster = int((self.base / "data" / "postmaster.pid").read_text().split("\n")[0])
        return [postmaster, *_children(postmaster)]

    def stop(self) -> None:
        with contextlib.suppress(SystemExit):
            self._run("pg_ctl", "-D", str(self.base / "data"), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.base, ignore_errors=True)


async def _create_database(server_url: str, name: str) -> str:
    engine = create_engine(server_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await engine.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


async def _seed(url: str) -> str:
    """Schema, the default team, the template every simulated node holds, an API key."""
    store = await open_sql_store(url, migrate=True)
    try:
        team = await store.teams.ensure_default_team()
        await store.templates.create_template(
            NewTemplate(team_id=team.id, alias="base", id=TemplateID(TEMPLATE), cpu_count=1,
                        memory_mb=256, build_state=TemplateBuildState.READY,
                        envd_version="0.6.13")
        )  # fmt: skip
        return (await store.keys.create_api_key(team.id, name="bench")).secret
    finally:
        await store.close()


# ---- processes -------------------------------------------------------------------------


@dataclass
class Processes:
    """What one configuration started, stopped by pid at the end."""

    home: Path
    src: Path
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)
    roles: dict[int, str] = field(default_factory=dict)

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        full = {k: v for k, v in os.environ.items() if not k.startswith("HUTCH_")}
        full.update(env, PYTHONPATH=f"{self.src}:{ROOT}")
        with (self.home / f"{name}.log").open("ab") as log:
            child = subprocess.Popen(args, env=full, stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, cwd=ROOT)  # fmt: skip
        self.children.append(child)
        self.roles[child.pid] = name.split("-")[0]
        return child

    def pids(self, role: str) -> list[int]:
        return [pid for pid, r in self.roles.items() if r == role]

    def check(self) -> None:
        for child in self.children:
            if child.poll() is not None:
                raise SystemExit(f"{child.args} exited ({child.returncode}); logs in {self.home}")

    def stop(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in self.children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(10)


async def _wait(check: Callable[[], Awaitable[bool]], procs: Processes, what: str) -> None:
    deadline = time.monotonic() + READY_S
    while not await check():
        procs.check()
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} not ready after {READY_S:.0f} s; logs in {procs.home}")
        await asyncio.sleep(0.2)


# ---- measuring -------------------------------------------------------------------------


@dataclass
class LockSampler:
    """Backends of the database waiting on a lock, sampled every 20 ms."""

    url: str
    samples: list[int] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)

    async def run(self, stop: asyncio.Event) -> None:
        engine = create_engine(self.url, pool_size=1)
        query = text(
            "SELECT wait_event FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        try:
            async with engine.connect() as conn:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                while not stop.is_set():
                    waiting = list((await conn.execute(query)).scalars())
                    self.samples.append(len(waiting))
                    self.kinds.update(waiting)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 0.02)
        finally:
            await engine.dispose()

    def summary(self) -> str:
        if not self.samples:
            return "-"
        mean = f"{statistics.fmean(self.samples):.1f} / {max(self.samples)}"
        if self.kinds:
            mean += " (" + ", ".join(k for k, _ in self.kinds.most_common(2)) + ")"
        return mean


async def _concurrently(n: int, concurrency: int, one: Callable[[int], Awaitable[None]]) -> float:
    """Run ``one(i)`` for i < n, ``concurrency`` at a time; the wall time."""
    queue = iter(range(n))

    async def worker() -> None:
        for i in queue:
            await one(i)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start


async def floor(url: str, n: int, concurrency: int) -> list[str]:
    """One-row INSERT transactions: the database's own rate on this machine."""
    engine = create_engine(url, pool_size=concurrency)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE floor (id serial PRIMARY KEY, v text)"))
        times: list[float] = []

        async def one(_: int) -> None:
            start = time.perf_counter()
            async with engine.begin() as conn:
                await conn.execute(text("INSERT INTO floor (v) VALUES (:v)"), {"v": "x" * 64})
            times.append(time.perf_counter() - start)

        await _concurrently(concurrency, concurrency, one)  # open the pool's connections
        times.clear()
        wall = await _concurrently(n, concurrency, one)
    finally:
        await engine.dispose()
    return ["floor: 1-row INSERT tx", str(n), f"{n / wall:.0f}",
            f"{1000 * statistics.median(times):.1f}", f"{1000 * _pct(times, 0.95):.1f}",
            "-", "-", "-", "-"]  # fmt: skip


class Profiler:
    """py-spy on each api while the creates run (``--profile``)."""

    def __init__(self, directory: Path) -> None:
        found = shutil.which("py-spy") or shutil.which(
            "py-spy", path=str(Path(sys.executable).parent)
        )
        if found is None:
            raise SystemExit("--profile needs py-spy: pip install py-spy")
        self.binary = found
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.running: list[subprocess.Popen[bytes]] = []
        self.outputs: list[Path] = []

    def start(self, label: str, pids: list[int]) -> None:
        for i, pid in enumerate(pids):
            out = self.directory / f"{label}-api-{i}.txt"
            self.outputs.append(out)
            self.running.append(subprocess.Popen(
                [self.binary, "record", "--pid", str(pid), "--format", "raw", "--rate", "200",
                 "--gil", "--nonblocking", "--output", str(out)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip

    def stop(self) -> None:
        for child in self.running:
            child.send_signal(signal.SIGINT)
        for child in self.running:
            child.wait(60)
        self.running.clear()

    def summary(self, top: int = 25) -> str:
        """The functions on most of the recorded stacks (inclusive), and the leaves."""
        inclusive: Counter[str] = Counter()
        leaves: Counter[str] = Counter()
        total = 0
        for out in self.outputs:
            for line in out.read_text().splitlines() if out.exists() else []:
                stack, _, count = line.rpartition(" ")
                frames = [f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0] + ")"
                          for f in stack.split(";") if f]  # fmt: skip
                if not frames or not count.isdigit():
                    continue
                total += int(count)
                for frame in set(frames):
                    inclusive[frame] += int(count)
                leaves[frames[-1]] += int(count)
        self.outputs.clear()
        lines = [f"{total} samples"]
        for title, counter in (("inclusive", inclusive), ("self", leaves)):
            lines.append(f"-- {title}")
            lines += [f"{100 * c / max(1, total):5.1f}%  {f}" for f, c in counter.most_common(top)]
        return "\n".join(lines)


async def capacity(server_url: str, *, nodes: int, n: int, concurrency: int, apis: int,
                   home: Path, src: Path, pg: Callable[[], list[int]],
                   profiler: Profiler | None = None) -> list[str]:  # fmt: skip
    """One row: ``nodes`` simulated nodes behind ``apis`` hutch api processes."""
    url = await _create_database(server_url, f"capacity_{nodes}")
    key = await _seed(url)
    token = secrets.token_urlsafe(24)
    procs = Processes(home / f"nodes-{nodes}", src)
    procs.home.mkdir(parents=True)
    store = await open_sql_store(url)
    try:
        api_urls = []
        for a in range(apis):
            port = _free_port()
            api_urls.append(f"http://127.0.0.1:{port}")
            procs.spawn(f"api-{a}", [sys.executable, "-m", "hutch", "api"], {
                "HUTCH_DATABASE_URL": url, "HUTCH_CLUSTER_TOKEN": token,
                "HUTCH_HOME": str(procs.home / f"api-{a}"), "HUTCH_MIGRATE": "false",
                "HUTCH_API_HOST": "127.0.0.1", "HUTCH_API_PORT": str(port),
                "HUTCH_MAX_SANDBOXES_PER_NODE": "0",  # each node's own limit (n + 10)
            })  # fmt: skip
        async with httpx.AsyncClient(timeout=60) as http:

            async def healthy() -> bool:
                with contextlib.suppress(httpx.HTTPError):
                    return all([(await http.get(f"{u}/health")).status_code == 200
                                for u in api_urls])  # fmt: skip
                return False

            await _wait(healthy, procs, "the apis")
            for first in range(1, nodes + 1, NODES_PER_PROCESS):
                count = min(NODES_PER_PROCESS, nodes + 1 - first)
                procs.spawn(f"fakenodes-{first}", [
                    sys.executable, str(ROOT / "bench" / "_fakenodes.py"), "--first", str(first),
                    "--count", str(count), "--capacity", str(n + 10),
                    "--dir", str(procs.home / "sockets"), "--register", ",".join(api_urls),
                    f"--token={token}",  # a token may start with "-"
                ], {})  # fmt: skip

            async def registered() -> bool:
                sockets = procs.home / "sockets"
                ready = sum(int(p.read_text()) for p in sockets.glob("ready-*"))
                listed = await store.nodes.list_nodes()
                return ready == nodes and nodes == sum(
                    1 for x in listed if x.status is NodeStatus.READY
                )

            await _wait(registered, procs, "the simulated nodes")
            headers = {"X-API-Key": key}
            created: list[str] = []
            create_times: list[float] = []
            kill_times: list[float] = []
            failures: list[str] = []

            async def create(i: int) -> None:
                start = time.perf_counter()
                r = await http.post(f"{api_urls[i % apis]}/sandboxes", headers=headers,
                                    json={"templateID": "base", "timeout": 3600})  # fmt: skip
                if r.status_code != 201:
                    failures.append(f"create {r.status_code}: {r.text[:200]}")
                    return
                create_times.append(time.perf_counter() - start)
                created.append(r.json()["sandboxID"])

            async def kill(i: int) -> None:
                start = time.perf_counter()
                r = await http.delete(f"{api_urls[i % apis]}/sandboxes/{created[i]}",
                                      headers=headers)  # fmt: skip
                if r.status_code != 204:
                    failures.append(f"kill {r.status_code}: {r.text[:200]}")
                    return
                kill_times.append(time.perf_counter() - start)

            # Warm up: each api imports, fills its pool and connects to (nearly) every node
            # once (placement spreads creates over the least allocated nodes).
            warm = max(2, nodes) * apis
            await _concurrently(warm, min(warm, concurrency), create)
            await _concurrently(len(created), min(warm, concurrency), kill)
            created.clear()
            create_times.clear()
            kill_times.clear()
            sampler = LockSampler(url)
            stop = asyncio.Event()
            sampling = asyncio.create_task(sampler.run(stop))
            roles = {"api": procs.pids("api"), "fakenodes": procs.pids("fakenodes"), "pg": pg()}
            before = {role: _cpu_s(pids) for role, pids in roles.items()}
            if profiler is not None:
                profiler.start(f"{nodes}", roles["api"])
            create_wall = await _concurrently(n, concurrency, create)
            if profiler is not None:
                profiler.stop()
                print(f"== {nodes} nodes: the apis' time while creating\n{profiler.summary()}")
            roles["pg"] = pg()  # backends opened meanwhile count from 0
            cpu = {role: (_cpu_s(pids) - before.get(role, 0)) / n for role, pids in roles.items()}
            stop.set()
            await sampling
            loads = await store.nodes.loads()
            placed = sum(load.sandboxes for load in loads.values())
            if failures or placed != len(created) or len(created) != n:
                raise SystemExit(f"{nodes} nodes: {len(created)} created, the store places "
                                 f"{placed}; failures: {failures[:5]}")  # fmt: skip
            kill_wall = await _concurrently(len(created), concurrency, kill)
            left = sum(load.sandboxes for load in (await store.nodes.loads()).values())
            if failures or left:
                raise SystemExit(f"{nodes} nodes: {left} left after the kills; {failures[:5]}")
        return [f"{nodes} node{'s' if nodes > 1 else ''}, {apis} api", str(n),
                f"{n / create_wall:.0f}", f"{1000 * statistics.median(create_times):.0f}",
                f"{1000 * _pct(create_times, 0.95):.0f}", f"{n / kill_wall:.0f}",
                sampler.summary(), str(len(loads)),
                " / ".join(f"{1000 * cpu[r]:.1f}" if r in cpu else "-"
                           for r in ("api", "fakenodes", "pg"))]  # fmt: skip
    finally:
        await store.close()
        procs.stop()


async def main(args: argparse.Namespace) -> None:
    private = None if args.database_url else PrivatePostgres()
    server_url = args.database_url or private.start()  # type: ignore[union-attr]
    home = Path(tempfile.mkdtemp(prefix="hutch-capacity-"))
    profiler = Profiler(args.profile) if args.profile else None
    try:
        rows = [await floor(await _create_database(server_url, "capacity_floor"),
                            args.n, args.concurrency)]  # fmt: skip
        for nodes in args.nodes:
            rows.append(await capacity(server_url, nodes=nodes, n=args.n,
                                       concurrency=args.concurrency, apis=args.apis,
                                       home=home, src=args.src.resolve(),
                                       pg=private.pids if private else list,
                                       profiler=profiler))  # fmt: skip
        load = os.getloadavg()[0]
        print_table(
            f"Control-plane capacity: {args.n} creates then kills, {args.concurrency} at a "
            f"time, PostgreSQL {'(private)' if private else 'given'}, "
            f"{os.cpu_count()} CPUs, load {load:.1f}",
            rows,
            ["setup", "creates", "creates/s", "create p50 ms", "create p95 ms", "kills/s",
             "PG lock waiters mean / max", "nodes used", "CPU ms/create api / nodes / PG"],
        )  # fmt: skip
    except BaseException:
        print(f"logs kept in {home}", file=sys.stderr)
        raise
    else:
        shutil.rmtree(home, ignore_errors=True)
    finally:
        if private is not None:
            private.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 10, 100])  # fmt: skip
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--apis", type=int, default=2)
    parser.add_argument("--database-url", help="a PostgreSQL server to create databases on")
    parser.add_argument(
        "--src",
        type=Path,
        default=ROOT / "src",
        help="the hutch sources the apis run (to compare two versions)",
    )
    parser.add_argument("--profile", type=Path, help="record the apis with py-spy into DIR")
    asyncio.run(main(parser.parse_args()))
