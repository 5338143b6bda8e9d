"""Two real ``hutch node`` processes (``--listen`` on loopback, their own homes and host
names) register with an api on the real PostgreSQL of the store tests (ADR 0025):
creates spread over them, a drained node takes none, a SIGKILLed node restarted on its
home within the grace gets its sandbox back (same boot id: adopted, still answering), and
a SIGSTOPped node is lost after lease and grace, its sandboxes reported killed with the
reason in their logs, and cleaned off it when it resumes and registers again.

Host names are ``hmn<slot><n>`` (subnets ``10.217.<4*slot+n>.0/24``), distinct from every
other test's, so this runs beside the session's serve without the host-tests lock.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from hutch.api.models import NewTemplate, TemplateBuildState
from hutch.api.store.sql import open_sql_store
from hutch.node.templates.busybox import build_busybox
from hutch.shared.ids import TemplateID
from tests.integration.cluster.conftest import TOKEN, ClusterApi, serve_api, wait_for
from tests.integration.store.conftest import (  # noqa: F401 - fixtures
    PostgresDatabases,
    postgres_databases,
    postgres_server_url,
    run_async,
)

from .serveproc import SLOT, HostNames, Serve, free_port, nodehelpers

pytestmark = pytest.mark.root

LEASE_S, GRACE_S = 2.0, 8.0


def _names(n: int) -> HostNames:
    return HostNames(
        bridge=f"hmn{SLOT}{n}",
        subnet=f"10.217.{4 * SLOT + n}.0/24",
        netns_prefix=f"hmn{SLOT}{n}-",
        veth_prefix=f"hm{SLOT}{n}",
        nft_table=f"hmn{SLOT}{n}",
        cgroup_parent=f"hmn{SLOT}{n}-{os.getpid()}",
        extra_env={
            "HUTCH_NODE_ENVD_READY_TIMEOUT_S": "60",
            "HUTCH_NODE_POOL_SIZE": "",
            "HUTCH_NODE_SHARED_TEMPLATES_DIR": "",
            "HUTCH_NODE_METRICS_INTERVAL_S": "1",
        },
    )


@dataclass
class NodeProc:
    node_id: str
    home: Path
    port: int
    env: dict[str, str]
    api_url: str
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.home / "node.log", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hutch", "node", "--home", str(self.home), "--listen",
                 f"127.0.0.1:{self.port}", "--node-id", self.node_id, "--register",
                 self.api_url],
                env=self.env, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
            )  # fmt: skip

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def running(self) -> list[str]:
        """What the node itself says it runs (its node API)."""
        r = httpx.get(f"http://127.0.0.1:{self.port}/v1/sandboxes",
                      headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)  # fmt: skip
        r.raise_for_status()
        return sorted(s["sandbox_id"] for s in r.json()["sandboxes"])

    def log_tail(self) -> str:
        return (self.home / "node.log").read_text(errors="replace")[-3000:]


async def _seed_busybox(url: str) -> None:
    store = await open_sql_store(url)
    try:
        team = await store.teams.ensure_default_team()
        await store.templates.create_template(
            NewTemplate(
                team_id=team.id,
                alias="busybox-n",
                id=TemplateID("busybox"),
                build_state=TemplateBuildState.READY,
                cpu_count=1,
                memory_mb=128,
                envd_version="0.6.13",
            )
        )
    finally:
        await store.close()


@pytest.fixture
def cluster(
    postgres_databases: PostgresDatabases,  # noqa: F811
    tmp_path: Path,
) -> Iterator[tuple[ClusterApi, list[NodeProc]]]:
    url = postgres_databases.create()
    for api in serve_api(
        url, tmp_path / "api", cluster_lease_s=LEASE_S, cluster_lost_grace_s=GRACE_S,
        cluster_sweep_interval_s=0.3,
    ):  # fmt: skip
        run_async(lambda: _seed_busybox(url))
        envd = nodehelpers.cached_envd_bundle()
        nodes: list[NodeProc] = []
        helpers: list[Serve] = []
        try:
            for n in range(2):
                home = tmp_path / f"node{n}"
                build_busybox(home / "templates")
                names = _names(n)
                env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
                env.update(names.env(), HUTCH_NODE_ENVD_BUNDLE_DIR=str(envd),
                           HUTCH_NODE_API_TOKEN=TOKEN)  # fmt: skip
                node = NodeProc(f"n{SLOT}{n}", home, free_port(), env, api.url)
                helpers.append(Serve(home=home, envd_bundle=envd, names=names))
                nodes.append(node)
                node.start()
            yield api, nodes
        finally:
            codes = [node.stop() for node in nodes]
            for helper in helpers:
                helper.destroy_everything()
            leaks = [helper.leaks() for helper in helpers]
        assert all(code == 0 for code in codes), [n.log_tail() for n in nodes]
        assert all(leak.total() == 0 for leak in leaks), leaks


def _node(admin: httpx.Client, node_id: str) -> dict[str, object]:
    r = admin.get(f"/nodes/{node_id}")
    return r.json() if r.status_code == 200 else {}


def test_two_real_nodes_spread_drain_adopt_and_lose(
    cluster: tuple[ClusterApi, list[NodeProc]],
) -> None:
    api, (n0, n1) = cluster
    with api.admin() as admin, api.member() as c:
        for node in (n0, n1):
            wait_for(
                lambda node=node: _node(admin, node.node_id).get("status") == "ready",
                timeout_s=120, what=f"{node.node_id} registered",
            )  # fmt: skip

        def create() -> str:
            r = c.post("/v2/sandboxes", json={"templateID": "busybox-n", "timeout": 300})
            assert r.status_code == 201, r.text
            return str(r.json()["sandboxID"])

        # Spread: two creates, one on each node (each node says so itself).
        first, second = create(), create()
        assert sorted(n0.running() + n1.running()) == sorted([first, second])
        assert len(n0.running()) == len(n1.running()) == 1
        on0 = n0.running()[0]

        # Drained n0 takes none; its sandbox keeps running.
        assert admin.post(f"/nodes/{n0.node_id}", json={"status": "draining"}).status_code == 204
        third = create()
        assert third in n1.running() and n0.running() == [on0]
        assert admin.post(f"/nodes/{n0.node_id}", json={"status": "ready"}).status_code == 204

        # SIGKILL n0 and start it again on its home within the grace: same (kernel) boot
        # id, so its sandbox is adopted and still answers.
        registered = _node(admin, n0.node_id)["registeredAt"]
        n0.signal(signal.SIGKILL)
        assert n0.proc is not None and n0.proc.wait(timeout=30) == -signal.SIGKILL
        n0.start()
        wait_for(lambda: _node(admin, n0.node_id).get("registeredAt") != registered,
                 timeout_s=GRACE_S + 60, what=f"n0 registered again: {n0.log_tail()}")  # fmt: skip
        assert _node(admin, n0.node_id)["status"] == "ready"
        assert n0.running() == [on0]
        assert c.get(f"/sandboxes/{on0}").status_code == 200

        # SIGSTOP n1: past lease and grace it is lost and its sandboxes reported killed.
        on1 = n1.running()
        assert len(on1) == 2
        n1.signal(signal.SIGSTOP)
        lost = wait_for(
            lambda: (n := _node(admin, n1.node_id)).get("status") == "lost" and n,
            timeout_s=LEASE_S + GRACE_S + 30, what="n1 lost",
        )  # fmt: skip
        assert "no heartbeat" in str(lost["lostReason"])  # type: ignore[index]
        for sid in on1:
            assert c.get(f"/sandboxes/{sid}").status_code == 404
            logs = c.get(f"/v2/sandboxes/{sid}/logs").json()["logs"]
            assert f"node {n1.node_id} lost" in logs[-1]["message"]
        # A create meanwhile goes to n0, the one node alive.
        fourth = create()
        assert fourth in n0.running()
        # SIGCONT: its heartbeat is refused, it registers again, and its reconcile removes
        # the sandboxes the store reported killed; none of them runs anywhere.
        n1.signal(signal.SIGCONT)
        wait_for(lambda: _node(admin, n1.node_id).get("status") == "ready" and not n1.running(),
                 timeout_s=60, what=f"n1 back and cleaned: {n1.log_tail()}")  # fmt: skip
        assert not set(on1) & set(n0.running())

        for sid in (on0, fourth):
            assert c.delete(f"/sandboxes/{sid}").status_code == 204
        assert n0.running() == []
