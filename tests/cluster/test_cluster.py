"""A real local cluster (``hutch cluster up --nodes 3 --apis 2``: PostgreSQL, two ``hutch
api``, one ``hutch proxy``, three ``hutch node`` with their own proxies) driven with the
official ``e2b`` SDK through the edge, then ``hutch cluster down`` leaving nothing.

Host names move with ``HUTCH_TEST_SLOT`` (``hc<slot><n>*``, subnets ``10.<230+slot>.<n>.0/24``),
distinct from every other test's; like every test under tests/cluster it runs under the
host-tests lock (the cluster's nodes share the host's lxcfs, loop devices and build lock).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
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
from typing import TypeVar

import httpx
import pytest
from e2b import (
    CommandExitException,
    FilesystemEventType,
    PtySize,
    Sandbox,
    SandboxState,
    Volume,
)
from e2b.exceptions import NotFoundException, SandboxNotRunningException, ServiceBusyException

from hutch.api.service.keys import KeyService
from hutch.api.store.sql import open_sql_store
from tests.conftest import machine_lacks

SLOT = int(os.environ.get("HUTCH_TEST_SLOT", "0") or "0")
PREFIX = f"hc{SLOT}"
SUBNET = f"10.{230 + SLOT}"
TEMPLATE = "base"
HUTCH = [sys.executable, "-m", "hutch"]
T = TypeVar("T")
NODES = {"node-1", "node-2", "node-3"}


@dataclass
class Cluster:
    home: Path
    info: dict[str, object]

    @property
    def env(self) -> dict[str, str]:
        return self.info["env"]  # type: ignore[return-value]

    def procs(self, role: str) -> list[dict[str, object]]:
        return [p for p in self.info["processes"] if p["role"] == role]  # type: ignore[attr-defined,index]

    def sdk(self, api: int = 0) -> dict[str, str]:
        return {"api_key": self.env["E2B_API_KEY"], "api_url": str(self.procs("api")[api]["url"]),
                "sandbox_url": self.env["E2B_SANDBOX_URL"]}  # fmt: skip

    @property
    def token(self) -> str:
        return (self.home / "cluster.token").read_text().strip()

    def node_of(self, sandbox_id: str) -> str:
        """Which node runs the sandbox, asked of the nodes themselves."""
        for node in self.procs("node"):
            auth = {"Authorization": f"Bearer {self.token}"}
            listed = httpx.get(f"{node['url']}/v1/sandboxes", timeout=10, headers=auth).json()
            if any(s["sandbox_id"] == sandbox_id for s in listed["sandboxes"]):
                return str(node["id"])
        raise AssertionError(f"{sandbox_id} runs on no node")


def _admin_key(cluster: Cluster) -> str:
    """An admin key of the cluster's default team, made in its store (cluster up makes a
    member key), for ``POST /nodes/{id}``."""

    async def make() -> str:
        store = await open_sql_store(str(cluster.info["databaseUrl"]))
        try:
            keys = KeyService(teams=store.teams, keys=store.keys)
            return (await keys.create_key(name="cluster-test-admin", admin=True)).secret
        finally:
            await store.close()

    return asyncio.run(make())


def _host_leftovers() -> dict[str, list[str]]:
    """Everything on the host named like this test's cluster."""
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    names = [line.split(":")[1].strip() for line in links.splitlines()]
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    return {
        "netns": [n for n in netns.split() if n.startswith(PREFIX)],
        "links": [n for n in names if n.startswith(PREFIX)],
        "nft": [t for t in tables.split() if t.startswith(PREFIX)],
        "mounts": [m for m in Path("/proc/mounts").read_text().splitlines() if "/hutch-cl" in m],
        # cgroup v2's one tree, and each v1 hierarchy (memory/, cpu/, ...).
        "cgroups": [
            str(p)
            for pattern in (f"{PREFIX}*", f"*/{PREFIX}*")
            for p in Path("/sys/fs/cgroup").glob(pattern)
        ],
    }


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if os.geteuid() != 0:
        machine_lacks("a cluster's nodes need root")
    if not Path(f"/var/lib/hutch/templates/{TEMPLATE}/template.json").is_file():
        machine_lacks(f"install.sh's {TEMPLATE} template")
    # Not pytest's tmp_path: its root is 0700, and PostgreSQL runs as the postgres user.
    home = Path(tempfile.mkdtemp(prefix="hutch-cl-"))
    assert not any(_host_leftovers().values()), _host_leftovers()
    up = subprocess.run(
        [*HUTCH, "cluster", "up", "--home", str(home), "--nodes", str(len(NODES)), "--apis", "2",
         "--names", PREFIX, "--subnet", SUBNET, "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert up.returncode == 0, up.stderr
    info = json.loads(up.stdout)
    try:
        yield Cluster(home=home, info=info)
    finally:
        if home.exists():
            subprocess.run([*HUTCH, "cluster", "down", "--home", str(home)], timeout=300)
        shutil.rmtree(home, ignore_errors=True)


def test_cluster_up_reports_every_process_and_the_exports(cluster: Cluster) -> None:
    roles = sorted(str(p["role"]) for p in cluster.info["processes"])  # type: ignore[attr-defined]
    assert roles == ["api", "api", "node", "node", "node", "proxy"]
    assert {p["nodeId"] for p in cluster.procs("node")} == NODES
    assert all(p["running"] and p["pid"] for p in cluster.info["processes"])  # type: ignore[attr-defined]
    assert cluster.env["E2B_API_KEY"].startswith("e2b_")
    status = subprocess.run([*HUTCH, "cluster", "status", "--home", str(cluster.home)],
                            capture_output=True, text=True, timeout=30, check=True)  # fmt: skip
    assert f"export E2B_SANDBOX_URL={cluster.env['E2B_SANDBOX_URL']}" in status.stdout


def test_sandboxes_spread_over_nodes_and_work_through_the_edge(cluster: Cluster) -> None:
    sandboxes = [Sandbox.create(TEMPLATE, timeout=120, metadata={"i": str(i)},
                                **cluster.sdk(i % 2)) for i in range(6)]  # fmt: skip
    try:
        nodes = {s.sandbox_id: cluster.node_of(s.sandbox_id) for s in sandboxes}
        assert set(nodes.values()) == NODES, nodes
        # GET /nodes (an admin's) says the same: each node counts the sandboxes it runs.
        admin = {"X-API-Key": _admin_key(cluster)}
        listed = httpx.get(f"{cluster.sdk(1)['api_url']}/nodes", headers=admin, timeout=30)
        assert listed.status_code == 200, listed.text
        counts = {n["id"]: n["sandboxCount"] for n in listed.json()}
        assert counts == {n: list(nodes.values()).count(n) for n in NODES}, counts
        for i, sbx in enumerate(sandboxes):
            # Each node's sandboxes live on its own subnet, reached through its proxy.
            node = int(nodes[sbx.sandbox_id].rsplit("-", 1)[1])
            address, answer = sbx.commands.run("hostname -I; echo $((6 * 7))").stdout.split()
            assert address.startswith(f"{SUBNET}.{node}.") and answer == "42"
            sbx.files.write(f"/tmp/f{i}", f"hello {i}")
            assert sbx.files.read(f"/tmp/f{i}") == f"hello {i}"
            # Metadata PATCH through the other api than the one that created it.
            other = cluster.sdk((i + 1) % 2)
            patched = httpx.patch(f"{other['api_url']}/sandboxes/{sbx.sandbox_id}/metadata",
                                  json={"patched": "yes"}, timeout=30,
                                  headers={"X-API-Key": other["api_key"]})  # fmt: skip
            assert patched.is_success, patched.text
            info = Sandbox.get_info(sbx.sandbox_id, **cluster.sdk(i % 2))
            assert info.metadata == {"i": str(i), "patched": "yes"}
        # A PTY and a polling watch on a sandbox of each node, through the edge.
        for node_id in sorted(NODES):
            sbx = next(s for s in sandboxes if nodes[s.sandbox_id] == node_id)
            term = sbx.pty.create(PtySize(rows=24, cols=80))
            sbx.pty.send_stdin(term.pid, b"echo pty-$((6*7)); exit 3\n")
            raw = bytearray()
            with pytest.raises(CommandExitException) as exited:
                term.wait(on_pty=raw.extend)
            assert exited.value.exit_code == 3 and "pty-42" in raw.decode(errors="replace")
            sbx.files.make_dir("/tmp/w")
            watch = sbx.files.watch_dir("/tmp/w")
            sbx.files.write("/tmp/w/seen.txt", "x")
            events: list = []
            deadline = time.monotonic() + 60
            while not any(e.name == "seen.txt" and e.type == FilesystemEventType.WRITE
                          for e in events):  # fmt: skip
                assert time.monotonic() < deadline, [(e.name, e.type) for e in events]
                events.extend(watch.get_new_events())
                time.sleep(0.05)
            watch.stop()
        # Fork across nodes: the parent's node drained, so every copy lands on another
        # node, which fetches the fork's snapshot from the parent's (ADR 0029).
        parent = sandboxes[0]
        parent.files.write("/tmp/forked", "from the parent")
        drain = f"{cluster.sdk()['api_url']}/nodes/{nodes[parent.sandbox_id]}"
        assert httpx.post(drain, json={"status": "draining"}, headers=admin).status_code == 204
        try:
            forks = [f for f in parent.fork(count=2, timeout=120) if isinstance(f, Sandbox)]
        finally:
            ready = httpx.post(drain, json={"status": "ready"}, headers=admin)
            assert ready.status_code == 204, ready.text
        try:
            assert len(forks) == 2
            assert nodes[parent.sandbox_id] not in {cluster.node_of(f.sandbox_id) for f in forks}
            assert [f.files.read("/tmp/forked") for f in forks] == ["from the parent"] * 2
        finally:
            for f in forks:
                f.kill()
        # Pause and resume one sandbox of each node, memory kept.
        for sbx in sandboxes[:2]:
            sbx.commands.run("echo kept > /dev/shm/m")
            sbx.pause()
            assert Sandbox.get_info(sbx.sandbox_id, **cluster.sdk()).state == SandboxState.PAUSED
            again = Sandbox.connect(sbx.sandbox_id, **cluster.sdk(1))
            assert again.commands.run("cat /dev/shm/m").stdout.strip() == "kept"
        # A kill: the edge answers "not found" at once, never the old route.
        victim = sandboxes.pop()
        victim.kill()
        with pytest.raises(SandboxNotRunningException, match="not found"):
            victim.commands.run("true")
    finally:
        for sbx in sandboxes:
            sbx.kill()


def test_a_local_volume_lives_on_its_node_and_is_read_through_any_api(
    cluster: Cluster,
) -> None:
    """ADR 0034 on a real cluster: the SDK makes a volume through one api and writes to it
    through that api's content API (forwarded to the volume's node); sandboxes mounting it
    are placed on that node and write into the mount; the other api's content API reads
    that back. The node drained, a mounting create is the 503 naming the volume while a
    create without it still lands elsewhere."""
    one, two = cluster.sdk(0), cluster.sdk(1)
    vol = Volume.create("shared-data", api_key=one["api_key"], api_url=one["api_url"])
    sandboxes: list[Sandbox] = []
    admin = {"X-API-Key": _admin_key(cluster)}
    try:
        vol.write_file("/in/hello.txt", "from the sdk", api_url=one["api_url"])
        for i, sdk in enumerate((one, two)):
            sbx = Sandbox.create(TEMPLATE, timeout=120, volume_mounts={"/mnt/v": vol}, **sdk)
            sandboxes.append(sbx)
            assert sbx.commands.run("cat /mnt/v/in/hello.txt").stdout == "from the sdk"
            sbx.commands.run(f"echo written by {i} > /mnt/v/out{i}.txt && sync")
        homes = {cluster.node_of(s.sandbox_id) for s in sandboxes}
        assert len(homes) == 1, homes
        (home,) = homes
        # Written in the mount on the volume's node, read through the other api, which
        # has no copy of the data: its content API forwards to that node.
        again = Volume.connect(vol.volume_id, api_key=two["api_key"], api_url=two["api_url"])
        for i in range(2):
            got = again.read_file(f"/out{i}.txt", api_url=two["api_url"])
            assert got == f"written by {i}\n"
        names = sorted(e.name for e in again.list("/", api_url=two["api_url"]))
        assert names == ["in", "out0.txt", "out1.txt"]
        # Drained through the api that then creates (its copy of the nodes is fresh after
        # its own membership write, ADR 0035).
        drain = f"{two['api_url']}/nodes/{home}"
        assert httpx.post(drain, json={"status": "draining"}, headers=admin).status_code == 204
        try:
            with pytest.raises(ServiceBusyException, match="lives on node") as no:
                Sandbox.create(TEMPLATE, timeout=60, volume_mounts={"/mnt/v": vol}, **two)
            assert home in str(no.value) and vol.volume_id in str(no.value)
            other = Sandbox.create(TEMPLATE, timeout=60, **two)
            sandboxes.append(other)
            assert cluster.node_of(other.sandbox_id) != home
            # Draining stops new sandboxes, not the data: still readable through any api.
            assert vol.read_file("/out0.txt", api_url=one["api_url"]) == "written by 0\n"
        finally:
            ready = httpx.post(drain, json={"status": "ready"}, headers=admin)
            assert ready.status_code == 204, ready.text
    finally:
        for sbx in sandboxes:
            sbx.kill()
        assert Volume.destroy(vol.volume_id, api_key=one["api_key"], api_url=one["api_url"])
    with pytest.raises(NotFoundException):
        Volume.get_info(vol.volume_id, api_key=two["api_key"], api_url=two["api_url"])


def test_auto_resume_through_the_edge(cluster: Cluster) -> None:
    sbx = Sandbox.create(TEMPLATE, timeout=3, lifecycle={"on_timeout": "pause"}, **cluster.sdk())
    try:
        sbx.files.write("/tmp/x", "y")
        deadline = time.monotonic() + 60
        while Sandbox.get_info(sbx.sandbox_id, **cluster.sdk()).state != SandboxState.PAUSED:
            assert time.monotonic() < deadline, "never auto-paused"
            time.sleep(0.3)
        # Traffic through the edge wakes it through an api (one reaper: the elected leader's).
        assert sbx.files.read("/tmp/x") == "y"
    finally:
        sbx.kill()


def test_node_proxy_refuses_callers_without_the_cluster_token(cluster: Cluster) -> None:
    sbx = Sandbox.create(TEMPLATE, timeout=60, **cluster.sdk())
    try:
        node = next(p for p in cluster.procs("node") if p["id"] == cluster.node_of(sbx.sandbox_id))
        # The node proxy's address is the one the node registered (its --proxy-listen).
        argv = Path(f"/proc/{node['pid']}/cmdline").read_bytes().decode().split("\0")
        proxy = argv[argv.index("--proxy-listen") + 1]
        ask = {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "49983"}
        refused = httpx.get(f"http://{proxy}/health", headers=ask, timeout=10)
        assert refused.status_code == 401
        wrong = httpx.get(f"http://{proxy}/health", timeout=10,
                          headers={**ask, "X-Hutch-Node-Token": "nope"})  # fmt: skip
        assert wrong.status_code == 401
        right = httpx.get(f"http://{proxy}/health", timeout=10,
                          headers={**ask, "X-Hutch-Node-Token": cluster.token})  # fmt: skip
        assert right.status_code == 204
    finally:
        sbx.kill()


def test_network_policy_and_traffic_token_through_the_edge(cluster: Cluster) -> None:
    """Issue 13 across processes: the api stores the policy and sends it to the node that
    runs the sandbox (its nft chain holds it), a PUT through the other api reaches that
    node, and the edge wants the traffic token on the sandbox's ports."""
    network = {"deny_out": ["198.51.100.1"], "allow_public_traffic": False}
    sbx = Sandbox.create(TEMPLATE, timeout=60, network=network, **cluster.sdk(0))
    try:
        info = Sandbox.get_info(sbx.sandbox_id, **cluster.sdk(1))
        assert info.network is not None and info.network["deny_out"] == ["198.51.100.1"]
        Sandbox.update_network(sbx.sandbox_id, {"deny_out": ["198.51.100.2"]}, **cluster.sdk(1))
        address = sbx.commands.run("hostname -I").stdout.split()[0]
        chain = "egress_" + address.replace(".", "_")
        tables = subprocess.run(["nft", "-j", "list", "tables"], capture_output=True,
                                text=True, check=True).stdout  # fmt: skip
        ours = [t["table"]["name"] for t in json.loads(tables)["nftables"] if "table" in t
                and t["table"]["name"].startswith(PREFIX)]  # fmt: skip
        listed = "".join(
            subprocess.run(["nft", "list", "chain", "inet", name, chain],
                           capture_output=True, text=True).stdout for name in ours
        )  # fmt: skip
        assert "198.51.100.2" in listed and "198.51.100.1" not in listed, listed
        edge = cluster.sdk()["sandbox_url"]
        ask = {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "8000"}
        missing = httpx.get(f"{edge}/", headers=ask, timeout=10)
        assert missing.status_code == 403 and "missing" in missing.json()["message"]
        token = {"e2b-traffic-access-token": sbx.traffic_access_token or ""}
        allowed = httpx.get(f"{edge}/", headers={**ask, **token}, timeout=10)
        assert allowed.status_code != 403  # nothing listens on 8000: the node says so
    finally:
        sbx.kill()


def _env_of(cluster: Cluster, role: str) -> dict[str, str]:
    pid = cluster.procs(role)[0]["pid"]
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_dashboard_session_of_one_api_works_on_the_other_through_the_edge(
    cluster: Cluster,
) -> None:
    # Signed in on api-1, used on api-2 (the sealing secret is the store's, ADR 0028); the
    # terminal and the file browser reach the sandbox through the edge (the apis'
    # HUTCH_DASHBOARD_SANDBOX_URL, set by cluster up).
    from websockets.sync.client import connect

    first, second = (str(p["url"]) for p in cluster.procs("api"))
    sandbox = Sandbox.create(TEMPLATE, timeout=120, **cluster.sdk())
    try:
        signed = httpx.post(f"{first}/dashboard/session", timeout=30,
                            json={"apiKey": cluster.env["E2B_API_KEY"]})  # fmt: skip
        assert signed.status_code == 200, signed.text
        cookie, csrf = signed.cookies["hutch_dashboard"], signed.json()["csrfToken"]
        with httpx.Client(base_url=second, cookies={"hutch_dashboard": cookie},
                          headers={"X-CSRF-Token": csrf}, timeout=60) as client:  # fmt: skip
            listed = client.get("/dashboard/api/v2/sandboxes").json()
            assert sandbox.sandbox_id in {s["sandboxID"] for s in listed}
            base = f"/dashboard/sandboxes/{sandbox.sandbox_id}/envd"
            up = client.post(f"{base}/files", params={"path": "/tmp/d.txt"},
                             files={"file": ("d.txt", b"via the edge\n")})  # fmt: skip
            assert up.status_code == 200, up.text
            assert sandbox.files.read("/tmp/d.txt") == "via the edge\n"
        url = second.replace("http://", "ws://")
        with connect(
            f"{url}/dashboard/sandboxes/{sandbox.sandbox_id}/terminal?csrf={csrf}",
            additional_headers={"Cookie": f"hutch_dashboard={cookie}", "Origin": second},
            open_timeout=60,
        ) as ws:  # fmt: skip
            ws.send(json.dumps({"type": "input", "data": "echo edge$((6*7)); exit 5\n"}))
            output, frame = b"", ws.recv(timeout=60)
            while isinstance(frame, bytes):
                output, frame = output + frame, ws.recv(timeout=60)
        assert json.loads(frame) == {"type": "exit", "code": 5}
        assert b"edge42" in output
    finally:
        sandbox.kill()


def test_sigkill_of_one_api_during_creates_the_other_carries_on(cluster: Cluster) -> None:
    victim = cluster.procs("api")[0]
    survivor = cluster.sdk(1)

    def create(i: int) -> Sandbox:
        return Sandbox.create(TEMPLATE, timeout=120, **survivor)

    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        doomed = pool.submit(Sandbox.create, TEMPLATE, timeout=120, **cluster.sdk(0))
        futures = [pool.submit(create, i) for i in range(3)]
        time.sleep(0.3)
        os.kill(int(victim["pid"]), signal.SIGKILL)
        made = [f.result(timeout=120) for f in futures]
        doomed_result = doomed.exception(timeout=120) or doomed.result()
    try:
        for sbx in made:
            assert sbx.commands.run("echo alive").stdout.strip() == "alive"
        assert len({cluster.node_of(s.sandbox_id) for s in made}) >= 1
        # The killed api answers nothing (the next test creates through the survivor again).
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{victim['url']}/health", timeout=5)
    finally:
        for sbx in made:
            sbx.kill()
        if isinstance(doomed_result, Sandbox):
            Sandbox.kill(doomed_result.sandbox_id, **survivor)


def _running(pid: int) -> bool:
    """Whether ``pid`` runs: a killed process not yet waited for by its reaper (state Z,
    which an orphan keeps until its subreaper gets to it) has stopped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _eventually(call: Callable[[], T], *, within_s: float = 60) -> T:
    """``call()``'s result once it stops raising (requests in flight during a restart may
    fail, retryably); its last error past ``within_s``."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            return call()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_postgres_restart_apis_and_edge_reconnect(cluster: Cluster) -> None:
    apis = [i for i, p in enumerate(cluster.procs("api")) if _running(int(p["pid"]))]
    assert apis, "no api left running"
    before = Sandbox.create(TEMPLATE, timeout=120, **cluster.sdk(apis[0]))
    made = [before]
    try:
        data = cluster.home / "pg" / "data"
        pg_ctl = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))[-1]
        subprocess.run([str(pg_ctl), "-D", str(data), "-l", str(data.parent / "postgres.log"),
                        "-m", "fast", "-w", "restart"], user="postgres", check=True,
                       capture_output=True, timeout=60)  # fmt: skip
        # The sandbox made before is still reached through the edge, and both apis create.
        out = _eventually(lambda: before.commands.run("echo still").stdout)
        assert out.strip() == "still"
        for api in apis:
            made.append(_eventually(lambda a=api: Sandbox.create(TEMPLATE, timeout=60,
                                                                 **cluster.sdk(a))))  # fmt: skip
            assert made[-1].commands.run("true").exit_code == 0
        # Routes still follow kills once the edge listens again.
        victim = made.pop()
        victim.kill()
        with pytest.raises(SandboxNotRunningException):
            victim.commands.run("true")
    finally:
        for sbx in made:
            sbx.kill()


def test_cluster_down_leaves_nothing(cluster: Cluster) -> None:
    """Last in the module: down stops exactly the recorded processes and cleans up."""
    sbx = Sandbox.create(TEMPLATE, timeout=120, **cluster.sdk(1))  # left running for down
    assert sbx.commands.run("true").exit_code == 0
    pids = [int(p["pid"]) for p in cluster.info["processes"]]  # type: ignore[attr-defined]
    down = subprocess.run([*HUTCH, "cluster", "down", "--home", str(cluster.home)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert down.returncode == 0, down.stderr
    assert not cluster.home.exists()
    assert [pid for pid in pids if _running(pid)] == []
    assert _host_leftovers() == {"netns": [], "links": [], "nft": [], "mounts": [], "cgroups": []}
