"""``hutch cluster up|status|down``: a real cluster of role processes on this machine.

``up`` starts, in order: a private PostgreSQL (Debian's server binaries, ``initdb`` into
``<home>/pg`` as the ``postgres`` user, listening on a Unix socket in ``<home>/pg/run``
only), the store migrated with the install's templates seeded and an API key made, M
``hutch api``, N ``hutch node`` processes that register with those apis (ADR 0025; each its
own home ``<home>/nodes/<id>`` and its own host names: bridge, subnet, netns and veth
prefixes, nft table, cgroup parent; node API and node proxy on loopback ports, the proxy's
address in the registration's ``hutch.dev/proxy`` label) and one ``hutch proxy``; ``up``
returns once every node is a ready row of the nodes table. Every process runs in its own
session, logs to ``<home>/logs/<role>-<id>.log`` and is recorded in ``<home>/cluster.json``
as it starts, with its pid and start time, so that ``down`` stops exactly the processes
``up`` started, even after a failed ``up``.

The nodes share the host's network namespace, each on its own bridge and subnet: to the
api and the edge they are as separate as hosts (they reach them only at their node API
and node proxy addresses), which is what the cluster tests need; docs/deploy.md says how
real hosts differ.

``down`` kills every sandbox through its node, stops the processes (SIGTERM, then SIGKILL
after a grace), removes what each node left on the host (sandboxes, bridge, nft table,
cgroups), stops PostgreSQL and deletes the home's files: nothing is left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx

STATE: Final = "cluster.json"
_READY_S: Final = 120.0
_STOP_GRACE_S: Final = 30.0


class ClusterError(Exception):
    """A cluster could not be brought up or down (the message says why)."""


@dataclass
class Proc:
    """One process ``up`` started."""

    role: str
    id: str
    pid: int
    start_time: int
    url: str
    log: str
    node_id: str | None = None
    #: The environment it was started with (nodes: what ``down`` needs to clean up).
    env: dict[str, str] = field(default_factory=dict)
    #: Its ``hutch`` arguments (nodes: what :func:`start_node` starts it again with).
    args: list[str] = field(default_factory=list)


@dataclass
class ClusterState:
    """``<home>/cluster.json``."""

    home: str
    database_url: str = ""
    pg_data: str = ""
    pg_pid: int = 0
    api_key: str = ""
    processes: list[Proc] = field(default_factory=list)

    def save(self) -> None:
        path = Path(self.home) / STATE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.chmod(tmp, 0o600)
        tmp.replace(path)

    @classmethod
    def load(cls, home: Path) -> ClusterState | None:
        try:
            data = json.loads((home / STATE).read_text())
        except FileNotFoundError:
            return None
        procs = [Proc(**p) for p in data.pop("processes", [])]
        return cls(**data, processes=procs)

    def exports(self) -> dict[str, str]:
        apis = [p.url for p in self.processes if p.role == "api"]
        edge = [p.url for p in self.processes if p.role == "proxy"]
        return {
            "E2B_API_URL": apis[0] if apis else "",
            "E2B_SANDBOX_URL": edge[0] if edge else "",
            "E2B_API_KEY": self.api_key,
        }


@dataclass(frozen=True)
class Names:
    """How ``up`` names each node's host objects: ``<prefix><n>`` plus a role letter, and
    subnet ``<subnet>.<n>.0/24`` (``--names``/``--subnet`` move them, as tests do)."""

    prefix: str = "hc"
    subnet: str = "10.230"

    def node_env(self, n: int) -> dict[str, str]:
        p = f"{self.prefix}{n}"
        return {
            "HUTCH_NODE_BRIDGE": f"{p}br",
            "HUTCH_NODE_SUBNET": f"{self.subnet}.{n}.0/24",
            "HUTCH_NODE_NETNS_PREFIX": f"{p}-",
            "HUTCH_NODE_VETH_PREFIX": f"{p}v",
            "HUTCH_NODE_NFT_TABLE": f"{p}",
            "HUTCH_NODE_CGROUP_PARENT": f"/{p}",
        }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks (field 22 of /proc/PID/stat), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[19])


def _alive(proc: Proc) -> bool:
    """Whether ``proc`` is still the process ``up`` started (pid reuse is checked) and still
    running: a killed process that its reaper has not waited for yet (a zombie) is gone."""
    try:
        stat = Path(f"/proc/{proc.pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rpartition(")")[2].split()
    return fields[0] not in ("Z", "X") and int(fields[19]) == proc.start_time


# ---- PostgreSQL -----------------------------------------------------------------------


def _pg_bindir() -> Path:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
                        key=lambda p: int(p.parent.parent.name), reverse=True)  # fmt: skip
    for pg_ctl in candidates:
        if (pg_ctl.parent / "initdb").exists() and (pg_ctl.parent / "postgres").exists():
            return pg_ctl.parent
    raise ClusterError(
        "PostgreSQL server binaries not found: apt-get install -y postgresql-15 "
        "(a cluster keeps its store in a private PostgreSQL)"
    )


def _pg_run(bindir: Path, base: Path, *args: str) -> subprocess.CompletedProcess[str]:
    user = "postgres" if os.geteuid() == 0 else None
    return subprocess.run([str(bindir / args[0]), *args[1:]], user=user, cwd=base,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          check=False)  # fmt: skip


def _start_postgres(state: ClusterState) -> None:
    bindir = _pg_bindir()
    base = Path(state.home) / "pg"
    data, run = base / "data", base / "run"
    run.mkdir(parents=True)
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            raise ClusterError("no `postgres` OS user: apt-get install -y postgresql-15") from None
        for parent in base.parents:
            if not os.stat(parent).st_mode & 0o001:
                raise ClusterError(
                    f"PostgreSQL runs as the postgres user, who cannot enter {parent} "
                    "(not searchable by others): choose a --home it can reach"
                )
        for path in (base, run):
            os.chown(path, pw.pw_uid, pw.pw_gid)
    init = _pg_run(bindir, base, "initdb", "-D", str(data), "-U", "postgres", "-A", "trust",
                   "-E", "UTF8", "--locale=C", "--no-sync")  # fmt: skip
    if init.returncode != 0:
        raise ClusterError(f"initdb failed: {init.stderr.strip()}")
    options = f"-c listen_addresses='' -c unix_socket_directories={run} -c max_connections=300"
    log = base / "postgres.log"
    started = _pg_run(bindir, base, "pg_ctl", "-D", str(data), "-l", str(log), "-o", options,
                      "-w", "start")  # fmt: skip
    state.pg_data = str(data)
    with contextlib.suppress(OSError, ValueError):
        state.pg_pid = int((data / "postmaster.pid").read_text().split("\n", 1)[0])
    state.save()
    if started.returncode != 0:
        raise ClusterError(f"pg_ctl start failed: {started.stderr.strip()} (see {log})")
    created = _pg_run(bindir, base, "createdb", "-h", str(run), "-U", "postgres", "hutch")
    if created.returncode != 0:
        raise ClusterError(f"createdb failed: {created.stderr.strip()}")
    state.database_url = f"postgresql+asyncpg://postgres@/hutch?host={run}"
    state.save()


def _stop_postgres(state: ClusterState) -> None:
    if not state.pg_data or not Path(state.pg_data).exists():
        return
    bindir = _pg_bindir()
    stopped = _pg_run(bindir, Path(state.pg_data).parent, "pg_ctl", "-D", state.pg_data,
                      "-m", "fast", "-w", "stop")  # fmt: skip
    if stopped.returncode != 0 and state.pg_pid and _start_time(state.pg_pid) is not None:
        cmdline = Path(f"/proc/{state.pg_pid}/cmdline").read_bytes()
        if state.pg_data.encode() in cmdline:  # our postmaster, by its data directory
            with contextlib.suppress(ProcessLookupError):
                os.kill(state.pg_pid, signal.SIGKILL)


# ---- the store: migrate, seed templates, an API key --------------------------------


async def _prepare_store(url: str, shared_templates: Path) -> str:
    from hutch.api.service.keys import KeyService
    from hutch.api.store.sql import open_sql_store
    from hutch.node.templates.artifact import DirTemplateStore
    from hutch.serve.templates import seed_templates

    store = await open_sql_store(url, migrate=True)
    try:
        shared = (shared_templates,) if shared_templates.is_dir() else ()
        artifacts = await DirTemplateStore(shared_templates, shared=shared).list()
        await seed_templates(store, artifacts)
        created = await KeyService(teams=store.teams, keys=store.keys).create_key(
            team_id=None, name="cluster"
        )
        return created.secret
    finally:
        await store.close()


# ---- processes -------------------------------------------------------------------------


def _spawn(state: ClusterState, *, role: str, pid_id: str, args: list[str], env: dict[str, str],
           url: str, node_id: str | None = None) -> Proc:  # fmt: skip
    logs = Path(state.home) / "logs"
    logs.mkdir(exist_ok=True)
    log = logs / f"{role}-{pid_id}.log"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("HUTCH_")}
    full_env.update(env)
    with log.open("ab") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "hutch", *args], env=full_env, stdin=subprocess.DEVNULL,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    start = _start_time(child.pid) or 0
    proc = Proc(role=role, id=pid_id, pid=child.pid, start_time=start, url=url, log=str(log),
                node_id=node_id, env=env if role == "node" else {},
                args=args if role == "node" else [])  # fmt: skip
    state.processes.append(proc)
    state.save()
    return proc


def _wait_ready(proc: Proc, probe: str, *, headers: dict[str, str] | None = None,
                ok: tuple[int, ...] = (200,)) -> None:  # fmt: skip
    deadline = time.monotonic() + _READY_S
    while time.monotonic() < deadline:
        if not _alive(proc):
            tail = Path(proc.log).read_text(errors="replace")[-2000:]
            raise ClusterError(f"{proc.role} {proc.id} exited during startup:\n{tail}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(probe, headers=headers, timeout=2).status_code in ok:
                return
        time.sleep(0.1)
    raise ClusterError(f"{proc.role} {proc.id} not ready after {_READY_S:.0f} s (see {proc.log})")


def _wait_registered(state: ClusterState, nodes: list[Proc]) -> None:
    """Until every node started is a ready row of the nodes table (its registration went
    through an api), or a node exits."""
    import asyncio

    from hutch.api.nodes_model import NodeStatus
    from hutch.api.store.sql import open_sql_store

    async def ready_ids() -> set[str]:
        store = await open_sql_store(state.database_url, migrate=False)
        try:
            return {n.id for n in await store.nodes.list_nodes() if n.status is NodeStatus.READY}
        finally:
            await store.close()

    wanted = {proc.node_id for proc in nodes}
    deadline = time.monotonic() + _READY_S
    while not wanted <= asyncio.run(ready_ids()):
        for proc in nodes:
            if not _alive(proc):
                tail = Path(proc.log).read_text(errors="replace")[-2000:]
                raise ClusterError(f"node {proc.id} exited before it registered:\n{tail}")
        if time.monotonic() > deadline:
            raise ClusterError(f"nodes not registered after {_READY_S:.0f} s: {sorted(wanted)}")
        time.sleep(0.2)


def up(
    home: Path, *, nodes: int, apis: int, names: Names = Names(), pool: str = "",
    shared_templates: Path = Path("/var/lib/hutch/templates"),
    envd_bundle: Path | None = Path("/var/lib/hutch/envd"),
    api_settings: dict[str, str] | None = None,
    node_settings: dict[str, str] | None = None,
) -> ClusterState:  # fmt: skip
    """Start the cluster (module docstring); on failure everything started is stopped.

    ``api_settings``: ``ApiSettings`` field → value for every api (``cluster_lease_s``:
    ``HUTCH_CLUSTER_LEASE_S``), e.g. short leases for fault tests; ``node_settings``:
    ``NodeSettings`` field → value for every node (``artifact_s3_bucket``:
    ``HUTCH_NODE_ARTIFACT_S3_BUCKET``), e.g. an artifact store."""
    import asyncio

    if nodes < 1 or apis < 1:
        raise ClusterError("a cluster needs at least one node and one api")
    home = home.resolve()
    existing = ClusterState.load(home)
    if existing is not None:
        raise ClusterError(f"a cluster is recorded in {home} already: hutch cluster down first")
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o711)  # the postgres user must reach <home>/pg
    state = ClusterState(home=str(home))
    state.save()
    try:
        token = secrets.token_urlsafe(32)
        (home / "cluster.token").write_text(token + "\n")
        os.chmod(home / "cluster.token", 0o600)
        _start_postgres(state)
        state.api_key = asyncio.run(_prepare_store(state.database_url, shared_templates))
        state.save()
        auth = {"Authorization": f"Bearer {token}"}
        # The apis first, on the store alone: the nodes then register with them (ADR 0025)
        # and are placed from the nodes table, as on real hosts; none is configured.
        common = {"HUTCH_DATABASE_URL": state.database_url, "HUTCH_CLUSTER_TOKEN": token}
        tuned = {f"HUTCH_{k.upper()}": v for k, v in (api_settings or {}).items()}
        api_urls: list[str] = []
        apis_started: list[Proc] = []
        # The edge's port, chosen now: the apis' dashboard reaches sandboxes through it.
        edge_port = _free_port()
        common_api = {**common, "HUTCH_DASHBOARD_SANDBOX_URL": f"http://127.0.0.1:{edge_port}"}
        for a in range(1, apis + 1):
            port = _free_port()
            url = f"http://127.0.0.1:{port}"
            proc = _spawn(state, role="api", pid_id=f"api-{a}", url=url, args=["api"],
                          env={**common_api, **tuned,
                               "HUTCH_HOME": str(home / "apis" / f"api-{a}"),
                               "HUTCH_MIGRATE": "false", "HUTCH_API_HOST": "127.0.0.1",
                               "HUTCH_API_PORT": str(port)})  # fmt: skip
            api_urls.append(url)
            apis_started.append(proc)
        for proc in apis_started:
            _wait_ready(proc, f"{proc.url}/health")
        node_tuned = {f"HUTCH_NODE_{k.upper()}": v for k, v in (node_settings or {}).items()}
        started: list[Proc] = []
        for n in range(1, nodes + 1):
            node_id = f"node-{n}"
            api_port, proxy_port = _free_port(), _free_port()
            env = {
                **names.node_env(n),
                "HUTCH_NODE_HOME": str(home / "nodes" / node_id),
                "HUTCH_NODE_NODE_ID": node_id,
                "HUTCH_NODE_API_TOKEN": token,
                "HUTCH_NODE_MANAGE_IP_FORWARD": "false",
                "HUTCH_NODE_POOL_SIZE": pool,
                "HUTCH_NODE_SHARED_TEMPLATES_DIR": str(shared_templates),
                **node_tuned,
            }
            if envd_bundle is not None and (envd_bundle / "SHA256").is_file():
                env["HUTCH_NODE_ENVD_BUNDLE_DIR"] = str(envd_bundle)
            url = f"http://127.0.0.1:{api_port}"
            proc = _spawn(state, role="node", pid_id=node_id, node_id=node_id, env=env, url=url,
                          args=["node", "--listen", f"127.0.0.1:{api_port}",
                                "--proxy-listen", f"127.0.0.1:{proxy_port}",
                                "--register", ",".join(api_urls)])  # fmt: skip
            started.append(proc)
        for proc in started:  # started together, waited for together
            _wait_ready(proc, f"{proc.url}/v1/node", headers=auth)
        _wait_registered(state, started)
        port = edge_port
        url = f"http://127.0.0.1:{port}"
        proc = _spawn(state, role="proxy", pid_id="proxy-1", url=url, args=["proxy"],
                      env={**common, "HUTCH_PROXY_HOST": "127.0.0.1", "HUTCH_PROXY_PORT": str(port),
                           "HUTCH_EDGE_API_URLS": ",".join(api_urls)})  # fmt: skip
        _wait_ready(proc, f"{url}/", ok=(400,))  # names no sandbox: the proxy's own 400
    except BaseException:
        down(home)
        raise
    return state


def start_node(home: Path, node_id: str) -> Proc:
    """Start a recorded node again (its process stopped: killed by a test, crashed) with
    the environment and arguments ``up`` gave it; returns once it answers and is a ready
    row again (it registered, and its registration's reconcile ran). ``down`` stops it."""
    home = home.resolve()
    state = ClusterState.load(home)
    if state is None:
        raise ClusterError(f"no cluster in {home}")
    old = next((p for p in state.processes if p.role == "node" and p.node_id == node_id), None)
    if old is None or not old.args:
        raise ClusterError(f"no node {node_id} recorded in {home}")
    if _alive(old):
        raise ClusterError(f"node {node_id} still runs (pid {old.pid})")
    state.processes.remove(old)
    proc = _spawn(state, role="node", pid_id=old.id, node_id=node_id, env=old.env,
                  url=old.url, args=old.args)  # fmt: skip
    token = (home / "cluster.token").read_text().strip()
    _wait_ready(proc, f"{proc.url}/v1/node", headers={"Authorization": f"Bearer {token}"})
    _wait_registered(state, [proc])
    return proc


def status(home: Path) -> dict[str, Any]:
    """Every recorded process with whether it still runs, and the exports."""
    state = ClusterState.load(home.resolve())
    if state is None:
        raise ClusterError(f"no cluster in {home.resolve()}")
    processes = [{"role": p.role, "id": p.id, "nodeId": p.node_id, "pid": p.pid, "url": p.url,
                  "running": _alive(p), "log": p.log} for p in state.processes]  # fmt: skip
    return {"home": state.home, "databaseUrl": state.database_url, "processes": processes,
            "env": state.exports()}  # fmt: skip


def _stop(proc: Proc, sig: int = signal.SIGTERM) -> None:
    if _alive(proc):
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)


def _wait_gone(procs: list[Proc], grace_s: float) -> None:
    deadline = time.monotonic() + grace_s
    for proc in procs:
        while _alive(proc) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(proc.pid, os.WNOHANG)
            time.sleep(0.05)
        if _alive(proc):
            _stop(proc, signal.SIGKILL)
            while _alive(proc):
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(proc.pid, os.WNOHANG)
                time.sleep(0.05)


def _kill_sandboxes(proc: Proc, token: str) -> None:
    """Every sandbox of a running node, through its node API (before the node stops)."""
    if not _alive(proc):
        return
    auth = {"Authorization": f"Bearer {token}"}
    with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
        listed = httpx.get(f"{proc.url}/v1/sandboxes", headers=auth, timeout=30).json()
        for sandbox in listed.get("sandboxes", []):
            httpx.delete(f"{proc.url}/v1/sandboxes/{sandbox['sandbox_id']}", headers=auth,
                         timeout=60)  # fmt: skip


def _clean_node_host(proc: Proc) -> None:
    """Whatever a stopped node left on the host: sandboxes, bridge, nft table, cgroups."""
    import asyncio

    from hutch.node.app import build_node
    from hutch.node.settings import NodeSettings

    env = {k.removeprefix("HUTCH_NODE_").lower(): v for k, v in proc.env.items()
           if k.startswith("HUTCH_NODE_") and k != "HUTCH_NODE_API_TOKEN"}  # fmt: skip
    settings = NodeSettings(**env)  # type: ignore[arg-type]

    async def run() -> None:
        node = build_node(settings, build_bundle=False)
        try:
            await node.manager.start()
            await node.manager.reconcile([])
        finally:
            await node.networks.remove_bridge()
            await node.aclose()

    if (settings.envd_bundle_path / "SHA256").is_file():
        asyncio.run(run())
    # The parent on cgroup v2 (one unified tree) and in every v1 hierarchy (memory/, cpu/...).
    root = Path("/sys/fs/cgroup")
    relative = settings.cgroup_parent.strip("/")
    for parent in [root / relative, *(h / relative for h in root.iterdir() if h.is_dir())]:
        if not parent.is_dir() or parent.is_symlink():
            continue
        for child in sorted(parent.glob("**/"), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                child.rmdir()


def down(home: Path) -> list[Proc]:
    """Stop what ``up`` recorded in ``home`` and delete the home (module docstring)."""
    home = home.resolve()
    state = ClusterState.load(home)
    if state is None:
        raise ClusterError(f"no cluster in {home}")
    token_file = home / "cluster.token"
    token = token_file.read_text().strip() if token_file.exists() else ""
    edges = [p for p in state.processes if p.role in ("proxy", "api")]
    nodes = [p for p in state.processes if p.role == "node"]
    for proc in edges:
        _stop(proc)
    _wait_gone(edges, _STOP_GRACE_S)
    for proc in nodes:
        _kill_sandboxes(proc, token)
        _stop(proc)
    _wait_gone(nodes, _STOP_GRACE_S)
    errors = []
    for proc in nodes:
        try:
            _clean_node_host(proc)
        except Exception as exc:  # keep going: the rest must still be cleaned
            errors.append(f"node {proc.id}: {exc}")
    _stop_postgres(state)
    shutil.rmtree(home, ignore_errors=True)
    if errors:
        raise ClusterError("; ".join(errors))
    return state.processes
