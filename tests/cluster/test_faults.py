"""Faults on a real local cluster (``hutch cluster up --nodes 2 --apis 2``, short leases),
injected into real processes by PID from the cluster's records and driven with the
official ``e2b`` SDK: a node SIGKILLed mid-create, a node partitioned (SIGSTOP) and back,
a node frozen (SIGSTOP) mid-create and mid-pause, an api SIGKILLed mid-create.
After each, the store and the nodes agree: every sandbox a node runs has a live row
naming that node, no row is left ``creating``, and no sandbox id is reported by two
nodes.

Run under ``flock /tmp/hutch-hosttests.lock``. Host names ``hf<slot><n>*`` and subnets
``10.<240+slot>.<n>.0/24``, distinct from tests/cluster/test_cluster.py's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from e2b import Sandbox, SandboxException
from e2b.exceptions import ServiceBusyException
from sqlalchemy import select

from hutch.api.store.sql import open_sql_store
from hutch.api.store.tables import sandboxes as sandbox_rows
from hutch.cluster import local
from hutch.node.settings import NodeSettings
from tests.conftest import machine_lacks

SLOT = int(os.environ.get("HUTCH_TEST_SLOT", "0") or "0")
PREFIX = f"hf{SLOT}"
SUBNET = f"10.{240 + SLOT}"
TEMPLATE = "base"
HUTCH = [sys.executable, "-m", "hutch"]
#: Short leases so a lost node is swept in seconds (heartbeats every lease / 3).
LEASE_S, GRACE_S = 3, 15
#: A row still creating this long after its insert is a dead api's (the reaper settles it).
STALE_CREATE_S = 25
T = TypeVar("T")
#: What the SDK raises for a 503 (``ServiceBusyException``) or another refusal.
REFUSED = (SandboxException, ServiceBusyException)


@dataclass
class Cluster:
    home: Path
    info: dict[str, Any]
    admin_key: str

    def procs(self, role: str) -> list[dict[str, Any]]:
        state = local.status(self.home)  # the records, with pids of restarted processes
        return [p for p in state["processes"] if p["role"] == role]

    def node(self, node_id: str) -> dict[str, Any]:
        return next(p for p in self.procs("node") if p["nodeId"] == node_id)

    def sdk(self, api: int = 0) -> dict[str, str]:
        return {"api_key": self.info["env"]["E2B_API_KEY"],
                "api_url": str(self.procs("api")[api]["url"]),
                "sandbox_url": self.info["env"]["E2B_SANDBOX_URL"]}  # fmt: skip

    @property
    def token(self) -> str:
        return (self.home / "cluster.token").read_text().strip()

    @property
    def database_url(self) -> str:
        return str(self.info["databaseUrl"])

    def on_node(self, node_id: str) -> set[str]:
        """The sandboxes a node runs, asked of the node itself."""
        auth = {"Authorization": f"Bearer {self.token}"}
        listed = httpx.get(f"{self.node(node_id)['url']}/v1/sandboxes", headers=auth, timeout=10)
        return {s["sandbox_id"] for s in listed.json()["sandboxes"]}

    def nodes_api(self, api: int = 0) -> dict[str, dict[str, Any]]:
        got = httpx.get(f"{self.procs('api')[api]['url']}/nodes", timeout=10,
                        headers={"X-API-Key": self.admin_key})  # fmt: skip
        got.raise_for_status()
        return {n["id"]: n for n in got.json()}

    def set_status(self, node_id: str, status: str) -> None:
        done = httpx.post(f"{self.procs('api')[-1]['url']}/nodes/{node_id}", timeout=10,
                          json={"status": status},
                          headers={"X-API-Key": self.admin_key})  # fmt: skip
        assert done.status_code == 204, done.text


def _store(url: str, query: Callable[[Any], Any]) -> Any:
    async def run() -> Any:
        store = await open_sql_store(url)
        try:
            return await query(store)
        finally:
            await store.close()

    return asyncio.run(run())


def rows(cluster: Cluster) -> dict[str, dict[str, Any]]:
    """Every sandbox row: id → state, node, killed_reason."""

    async def read(store: Any) -> dict[str, dict[str, Any]]:
        async with store.engine.connect() as conn:
            c = sandbox_rows.c
            found = await conn.execute(select(c.id, c.state, c.node_id, c.killed_reason))
            return {r.id: {"state": r.state, "node": r.node_id, "reason": r.killed_reason}
                    for r in found}  # fmt: skip

    return _store(cluster.database_url, read)  # type: ignore[no-any-return]


def _eventually(
    check: Callable[[], T], *, within_s: float = 60, what: str = "", every_s: float = 0.2
) -> T:
    """``check()``'s value once it is truthy and does not raise; its last error past the
    deadline."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            value = check()
            if value:
                return value
        except Exception:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within_s} s: {what}")
        time.sleep(every_s)


def assert_store_and_nodes_agree(cluster: Cluster, node_ids: list[str]) -> None:
    """Every sandbox a live node runs has a live row placed on it, no row is creating,
    and no id runs on two nodes."""
    table = rows(cluster)
    seen: dict[str, str] = {}
    for node_id in node_ids:
        for sandbox_id in cluster.on_node(node_id):
            assert sandbox_id not in seen, f"{sandbox_id} runs on {seen[sandbox_id]} and {node_id}"
            seen[sandbox_id] = node_id
            row = table.get(sandbox_id)
            assert row is not None, f"{sandbox_id} runs on {node_id} without a row"
            assert row["node"] == node_id and row["state"] in ("running", "paused"), row
    assert [i for i, r in table.items() if r["state"] == "creating"] == []


def _admin_key(url: str) -> str:
    async def make(store: Any) -> str:
        team = await store.teams.create_team(name="faults-ops")
        return str((await store.keys.create_api_key(team.id, name="ops", admin=True)).secret)

    return _store(url, make)  # type: ignore[no-any-return]


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if os.geteuid() != 0:
        machine_lacks("a cluster's nodes need root")
    if not Path(f"/var/lib/hutch/templates/{TEMPLATE}/template.json").is_file():
        machine_lacks(f"install.sh's {TEMPLATE} template")
    home = Path(tempfile.mkdtemp(prefix="hutch-cf-"))
    settings = {"cluster_lease_s": LEASE_S, "cluster_lost_grace_s": GRACE_S,
                "cluster_sweep_interval_s": 0.5, "reaper_interval_s": 0.5,
                "create_stale_after_s": STALE_CREATE_S, "leader_interval_s": 0.5}  # fmt: skip
    up = subprocess.run(
        [*HUTCH, "cluster", "up", "--home", str(home), "--nodes", "2", "--apis", "2",
         "--names", PREFIX, "--subnet", SUBNET, "--json",
         *(f"--api-setting={k}={v}" for k, v in settings.items())],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert up.returncode == 0, up.stderr
    info = json.loads(up.stdout)
    try:
        yield Cluster(home=home, info=info, admin_key=_admin_key(str(info["databaseUrl"])))
    finally:
        if home.exists():
            subprocess.run([*HUTCH, "cluster", "down", "--home", str(home)], timeout=300)
        shutil.rmtree(home, ignore_errors=True)


def _creating_on(cluster: Cluster, node_id: str) -> str | None:
    return next((i for i, r in rows(cluster).items()
                 if r["state"] == "creating" and r["node"] == node_id), None)  # fmt: skip


def test_node_killed_mid_create_the_create_lands_on_the_other_node(cluster: Cluster) -> None:
    """node-1 takes the create (node-2 drained), is frozen as soon as the row is placed on
    it and SIGKILLed: the create succeeds on node-2; the cut-short attempt's row is never
    running (killing, then killed with node-1 when the sweeper finds it lost); node-1
    started again destroys whatever it had made of it."""
    cluster.set_status("node-2", "draining")
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        made = pool.submit(Sandbox.create, TEMPLATE, timeout=120, **cluster.sdk(0))
        attempt = _eventually(lambda: _creating_on(cluster, "node-1"), within_s=60,
                              what="a creating row on node-1", every_s=0.02)  # fmt: skip
        victim = int(cluster.node("node-1")["pid"])
        os.kill(victim, signal.SIGSTOP)  # it cannot finish the create now
        cluster.set_status("node-2", "ready")
        os.kill(victim, signal.SIGKILL)
        sbx = made.result(timeout=120)
    try:
        assert sbx.sandbox_id != attempt
        assert sbx.sandbox_id in cluster.on_node("node-2")
        assert sbx.commands.run("echo alive").stdout.strip() == "alive"
        assert rows(cluster)[attempt]["state"] in ("killing", "killed")
        # The sweeper: node-1 lost, the attempt reported killed with the reason.
        _eventually(lambda: cluster.nodes_api(1)["node-1"]["status"] == "lost",
                    within_s=60, what="node-1 lost")  # fmt: skip
        row = _eventually(lambda: (r := rows(cluster)[attempt])["state"] == "killed" and r,
                          within_s=30, what="the attempt killed")  # fmt: skip
        assert "node node-1 lost" in str(row["reason"]), row
        # node-1 comes back (a new process, the same host boot): it registers, and its
        # registration's reconcile destroys the half-made sandbox the store killed.
        local.start_node(cluster.home, "node-1")
        assert attempt not in cluster.on_node("node-1")
        assert cluster.nodes_api()["node-1"]["status"] == "ready"
        assert_store_and_nodes_agree(cluster, ["node-1", "node-2"])
    finally:
        sbx.kill()


def _lease_ended(cluster: Cluster, node_id: str) -> bool:
    async def read(store: Any) -> bool:
        now = await store.nodes.now()
        node = next(n for n in await store.nodes.list_nodes() if n.id == node_id)
        return bool(node.lease_expires_at < now)

    return bool(_store(cluster.database_url, read))


def test_partitioned_node_creates_move_on_and_its_return_starts_nothing_twice(
    cluster: Cluster,
) -> None:
    """node-2 stops answering (SIGSTOP) with a sandbox on it. Past its lease, creates go to
    node-1. Back within the grace (SIGCONT), nothing was swept: its sandbox still works.
    Stopped again past the grace, it is lost and its sandbox reported killed; back again,
    its registration destroys that sandbox rather than running it beside the store's
    view, and it takes creates again."""
    cluster.set_status("node-1", "draining")
    held = Sandbox.create(TEMPLATE, timeout=300, **cluster.sdk(0))
    cluster.set_status("node-1", "ready")
    made: list[Sandbox] = []
    try:
        assert held.sandbox_id in cluster.on_node("node-2")
        pid = int(cluster.node("node-2")["pid"])
        # A short partition: past the lease, within the grace.
        os.kill(pid, signal.SIGSTOP)
        try:
            _eventually(lambda: _lease_ended(cluster, "node-2"), within_s=30,
                        what="node-2's lease ended")  # fmt: skip
            for api in (0, 1):  # placement passes a node whose lease ended
                made.append(Sandbox.create(TEMPLATE, timeout=120, **cluster.sdk(api)))
            assert {s.sandbox_id for s in made} <= cluster.on_node("node-1")
        finally:
            os.kill(pid, signal.SIGCONT)
        _eventually(lambda: not _lease_ended(cluster, "node-2"), within_s=30,
                    what="node-2's lease renewed")  # fmt: skip
        assert cluster.nodes_api()["node-2"]["status"] == "ready"
        assert held.commands.run("echo kept").stdout.strip() == "kept"

        # A long partition: past the grace, node-2 is lost and its sandbox reported killed.
        os.kill(pid, signal.SIGSTOP)
        try:
            _eventually(lambda: cluster.nodes_api(1)["node-2"]["status"] == "lost",
                        within_s=60, what="node-2 lost")  # fmt: skip
            row = rows(cluster)[held.sandbox_id]
            assert row["state"] == "killed" and "node node-2 lost" in str(row["reason"])
            api = cluster.sdk()
            gone = httpx.get(f"{api['api_url']}/sandboxes/{held.sandbox_id}",
                             headers={"X-API-Key": api["api_key"]}, timeout=10)  # fmt: skip
            assert gone.status_code == 404
        finally:
            os.kill(pid, signal.SIGCONT)
        # Its heartbeat is refused (lost), it registers again, and its reconcile destroys
        # the sandbox the store killed: it never runs again, here or anywhere.
        _eventually(lambda: cluster.nodes_api()["node-2"]["status"] == "ready",
                    within_s=60, what="node-2 registered again")  # fmt: skip
        _eventually(lambda: held.sandbox_id not in cluster.on_node("node-2"), within_s=30,
                    what="the killed sandbox destroyed on node-2")  # fmt: skip
        cluster.set_status("node-1", "draining")
        try:
            made.append(Sandbox.create(TEMPLATE, timeout=120, **cluster.sdk(1)))
        finally:
            cluster.set_status("node-1", "ready")
        assert made[-1].sandbox_id in cluster.on_node("node-2")
        assert_store_and_nodes_agree(cluster, ["node-1", "node-2"])
    finally:
        for sbx in made:
            sbx.kill()


def _lease_expires(cluster: Cluster, node_id: str) -> Any:
    async def read(store: Any) -> Any:
        return (await store.nodes.get_node(node_id)).lease_expires_at

    return _store(cluster.database_url, read)


def _incarnation(cluster: Cluster, node_id: str) -> tuple[str, str]:
    async def read(store: Any) -> tuple[str, str]:
        node = await store.nodes.get_node(node_id)
        return node.boot_id, node.incarnation

    return _store(cluster.database_url, read)  # type: ignore[no-any-return]


def _freeze_after_a_beat(cluster: Cluster, node_id: str) -> int:
    """SIGSTOP the node's process right after it renewed its lease, so that placement
    still sees it alive for most of a lease; its pid."""
    first = _lease_expires(cluster, node_id)
    _eventually(lambda: _lease_expires(cluster, node_id) > first, within_s=30,
                what=f"a heartbeat of {node_id}", every_s=0.02)  # fmt: skip
    pid = int(cluster.node(node_id)["pid"])
    os.kill(pid, signal.SIGSTOP)
    return pid


def _thaw(cluster: Cluster, node_id: str, pid: int) -> None:
    os.kill(pid, signal.SIGCONT)
    _eventually(lambda: not _lease_ended(cluster, node_id), within_s=30,
                what=f"{node_id}'s lease renewed")  # fmt: skip


def _host_objects(cluster: Cluster, node_id: str) -> dict[str, int]:
    """How many runc containers, network namespaces and sandbox cgroups the node has on
    the host (its own names, from the environment it was started with)."""
    state = local.ClusterState.load(cluster.home)
    assert state is not None
    env = next(p.env for p in state.processes if p.node_id == node_id)
    settings = NodeSettings(**{k.removeprefix("HUTCH_NODE_").lower(): v for k, v in env.items()
                               if k.startswith("HUTCH_NODE_") and k != "HUTCH_NODE_API_TOKEN"})  # type: ignore[arg-type]  # fmt: skip
    listed = subprocess.run(["runc", "--root", str(settings.runtime_root), "list", "-q"],
                            capture_output=True, text=True, check=True, timeout=30)  # fmt: skip
    netns = Path("/run/netns")
    parent = Path("/sys/fs/cgroup") / settings.cgroup_parent.strip("/")
    return {
        "containers": len(listed.stdout.split()),
        "netns": sum(1 for n in netns.iterdir() if n.name.startswith(settings.netns_prefix))
        if netns.is_dir()
        else 0,
        "cgroups": sum(1 for c in parent.iterdir() if c.is_dir()) if parent.is_dir() else 0,
    }


def _settled_host_objects(cluster: Cluster, node_id: str) -> dict[str, int]:
    """:func:`_host_objects` once three reads a second apart agree (the pool refilled)."""
    seen: list[dict[str, int]] = []

    def settled() -> dict[str, int] | None:
        seen.append(_host_objects(cluster, node_id))
        return seen[-1] if len(seen) >= 3 and seen[-1] == seen[-2] == seen[-3] else None

    return _eventually(settled, within_s=60, what=f"{node_id}'s host objects settle",
                       every_s=0.5)  # fmt: skip


def _new_rows_on(cluster: Cluster, node_id: str, known: set[str]) -> list[str]:
    return sorted(i for i, r in rows(cluster).items() if r["node"] == node_id and i not in known)


def test_node_frozen_mid_create_fails_or_moves_and_nothing_is_half_made_when_back(
    cluster: Cluster,
) -> None:
    """node-1 is frozen (SIGSTOP) right after a heartbeat, with a sandbox of its own, and
    a create is placed on it. With node-2 drained the create is a retryable 503 naming
    node-1 at node-1's lease's end, not at a node client's timeout (the create that lands
    on the other node is test_node_killed_mid_create_...'s). node-1 thawed (within the
    grace: the same process, the same incarnation, no new registration): the attempt is
    killed there, no row is left creating or killing, nothing runs twice, node-1 has no
    runc container, netns or cgroup more than before, and its own sandbox still answers."""
    cluster.set_status("node-2", "draining")
    held = Sandbox.create(TEMPLATE, timeout=300, **cluster.sdk(0))
    waited: dict[str, float] = {}
    try:
        assert held.sandbox_id in cluster.on_node("node-1")
        before = _settled_host_objects(cluster, "node-1")
        process = _incarnation(cluster, "node-1")
        known = set(rows(cluster))

        # node-2 drained: nowhere else to go, a clear retryable 503.
        pid = _freeze_after_a_beat(cluster, "node-1")
        try:
            started = time.monotonic()
            with pytest.raises(REFUSED) as failed:
                Sandbox.create(TEMPLATE, timeout=120, **cluster.sdk(0))
            waited["create 503"] = time.monotonic() - started
            # Placed on node-1, cut short at its lease's end, and nowhere else to go.
            assert "503" in str(failed.value) and "node node-1" in str(failed.value), failed.value
            attempts = _new_rows_on(cluster, "node-1", known)
            assert len(attempts) == 1 and rows(cluster)[attempts[0]]["state"] == "killing"
        finally:
            _thaw(cluster, "node-1", pid)

        # Back: the reaper kills what node-1 made of the attempts (their rows ``killing``).
        for sandbox_id in attempts:
            _eventually(lambda s=sandbox_id: rows(cluster)[s]["state"] == "killed",
                        within_s=60, what=f"{sandbox_id} killed")  # fmt: skip
            _eventually(lambda s=sandbox_id: s not in cluster.on_node("node-1"), within_s=60,
                        what=f"{sandbox_id} gone from node-1")  # fmt: skip
        assert [i for i, r in rows(cluster).items() if r["state"] in ("creating", "killing")] == []
        assert _incarnation(cluster, "node-1") == process  # the same process, kept
        assert cluster.nodes_api()["node-1"]["status"] == "ready"
        assert rows(cluster)[held.sandbox_id] == {"state": "running", "node": "node-1",
                                                  "reason": None}  # fmt: skip
        assert held.commands.run("echo kept").stdout.strip() == "kept"
        assert_store_and_nodes_agree(cluster, ["node-1", "node-2"])
        _eventually(lambda: _host_objects(cluster, "node-1") == before, within_s=45,
                    what=f"node-1's host objects back to {before}")  # fmt: skip
    finally:
        print(f"\nSDK waits with node-1 frozen (lease {LEASE_S} s): "
              + ", ".join(f"{k} {v:.1f} s" for k, v in waited.items()))  # fmt: skip
        cluster.set_status("node-2", "ready")
        held.kill()


def test_pause_on_a_frozen_node_ends_with_its_lease_and_is_undone_when_it_is_back(
    cluster: Cluster,
) -> None:
    """A pause to a frozen node is a 503 naming it at its lease's end; the row is running
    again (never paused without the node having paused it), and once the node is thawed
    the sandbox runs there, unpaused, and answers."""
    cluster.set_status("node-2", "draining")
    try:
        sbx = Sandbox.create(TEMPLATE, timeout=300, **cluster.sdk(0))
    finally:
        cluster.set_status("node-2", "ready")
    waited: dict[str, float] = {}
    try:
        assert sbx.sandbox_id in cluster.on_node("node-1")
        pid = _freeze_after_a_beat(cluster, "node-1")
        try:
            started = time.monotonic()
            with pytest.raises(REFUSED) as failed:
                sbx.pause()
            waited["pause"] = time.monotonic() - started
            assert "503" in str(failed.value) and "node-1" in str(failed.value), failed.value
            assert "being paused" in str(failed.value), failed.value
            assert rows(cluster)[sbx.sandbox_id]["state"] == "running"
        finally:
            _thaw(cluster, "node-1", pid)

        def unpaused() -> bool:
            auth = {"Authorization": f"Bearer {cluster.token}"}
            listed = httpx.get(f"{cluster.node('node-1')['url']}/v1/sandboxes", headers=auth,
                               timeout=10).json()["sandboxes"]  # fmt: skip
            return any(s["sandbox_id"] == sbx.sandbox_id and s["paused"] is None for s in listed)

        # The node may carry the pause out once thawed: the api's undo resumes it.
        _eventually(unpaused, within_s=60, what="the sandbox unpaused on node-1")
        assert sbx.commands.run("echo awake").stdout.strip() == "awake"
        assert rows(cluster)[sbx.sandbox_id]["state"] == "running"

        assert_store_and_nodes_agree(cluster, ["node-1", "node-2"])
    finally:
        print(f"\nSDK waits with node-1 frozen (lease {LEASE_S} s): "
              + ", ".join(f"{k} {v:.1f} s" for k, v in waited.items()))  # fmt: skip
        with contextlib.suppress(Exception):
            sbx.kill()


def test_api_killed_mid_create_the_other_serves_and_nothing_is_half_made(
    cluster: Cluster,
) -> None:
    """api-1 is SIGKILLed with a create in flight (its row placed, the node booting it):
    api-2 serves creates at once, and the orphan (a sandbox the node finished for a
    request nobody answers, its row ``creating``) is killed by the reaper of the leader
    that is left, so the store and the nodes agree again."""
    victim = cluster.procs("api")[0]
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        doomed = pool.submit(Sandbox.create, TEMPLATE, timeout=120, **cluster.sdk(0))
        orphan = _eventually(
            lambda: next((i for i, r in rows(cluster).items() if r["state"] == "creating"), None),
            within_s=60, what="a creating row", every_s=0.02,
        )  # fmt: skip
        os.kill(int(victim["pid"]), signal.SIGKILL)
        outcome = doomed.exception(timeout=120) or doomed.result()
    survivor = Sandbox.create(TEMPLATE, timeout=120, **cluster.sdk(1))
    try:
        assert not isinstance(outcome, Sandbox), "the killed api answered the create"
        assert survivor.commands.run("true").exit_code == 0
        assert not _pid_alive(int(victim["pid"]))
        # The reaper (api-2's, the leader now) settles the orphan after STALE_CREATE_S.
        _eventually(lambda: rows(cluster)[orphan]["state"] == "killed",
                    within_s=STALE_CREATE_S + 45, what="the orphan killed")  # fmt: skip
        assert all(orphan not in cluster.on_node(n) for n in ("node-1", "node-2"))
        assert_store_and_nodes_agree(cluster, ["node-1", "node-2"])
    finally:
        survivor.kill()
