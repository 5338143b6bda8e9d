"""Snapshots across nodes in a real cluster (ADR 0029): ``hutch cluster up --nodes 2``, the
official ``e2b`` SDK through the edge. A snapshot is taken on node-1, so at first it is a
template only node-1 holds; node-1 is drained and a create from the snapshot lands on
node-2, which fetches it from node-1 over the node API (digest-checked tars) and boots
from it with the snapshot's files; the store's ``artifact_holdings`` then names both;
deleting the snapshot removes it from both nodes' disks; ``hutch cluster down`` leaves
nothing. Host names ``ha<slot><n>*``, subnets ``10.<200+slot>.<n>.0/24``: distinct from
the other cluster tests'; run under the host-tests flock like them.

An image imported through the edge's API (an OCI docker-archive: registries are out of
reach) runs on a node the cluster api's import worker chose from the nodes table; that node
is the template's one holder in the store, and once it is drained a create from the template
lands on the other node, which fetches it from the holder and runs the image.

An SDK build (``Template.build``) through the cluster api runs on a node its build worker
chose, which got the ``COPY`` archive from the store; that node holds the template and its
``name@build`` version, and drained, the other node fetches the build and starts it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2b import Sandbox, Template

from hutch.api.nodes_model import NodeStatus
from hutch.api.store.sql import open_sql_store
from hutch.shared.ids import NodeID
from tests.conftest import machine_lacks
from tests.imagebuild import BUSYBOX_CONFIG, busybox_layers, write_docker_archive

SLOT = int(os.environ.get("HUTCH_TEST_SLOT", "0") or "0")
PREFIX = f"ha{SLOT}"
SUBNET = f"10.{200 + SLOT}"
HUTCH = [sys.executable, "-m", "hutch"]


class Cluster:
    def __init__(self, home: Path, info: dict[str, object]) -> None:
        self.home, self.info = home, info

    def procs(self, role: str) -> list[dict[str, object]]:
        return [p for p in self.info["processes"] if p["role"] == role]  # type: ignore[attr-defined,index]

    def sdk(self) -> dict[str, str]:
        env: dict[str, str] = self.info["env"]  # type: ignore[assignment]
        return {"api_key": env["E2B_API_KEY"], "api_url": env["E2B_API_URL"],
                "sandbox_url": env["E2B_SANDBOX_URL"]}  # fmt: skip

    def node_of(self, sandbox_id: str) -> str:
        token = (self.home / "cluster.token").read_text().strip()
        for node in self.procs("node"):
            listed = httpx.get(f"{node['url']}/v1/sandboxes", timeout=10,
                               headers={"Authorization": f"Bearer {token}"}).json()  # fmt: skip
            if any(s["sandbox_id"] == sandbox_id for s in listed["sandboxes"]):
                return str(node["id"])
        raise AssertionError(f"{sandbox_id} runs on no node")

    def envd_pid(self, node_id: str, sandbox_id: str) -> int:
        """``envd_pid`` of ``sandbox_id``'s ``sandbox.json`` on ``node_id`` (0: exec'd)."""
        for path in (self.home / "nodes" / node_id / "sandboxes").glob("*/sandbox.json"):
            record = json.loads(path.read_text())
            if record["sandbox_id"] == sandbox_id:
                return int(record["envd_pid"])
        raise AssertionError(f"no sandbox.json on {node_id} names {sandbox_id}")

    def templates(self, node_id: str) -> Path:
        return self.home / "nodes" / node_id / "templates"

    def store(self, work: object) -> object:
        async def run() -> object:
            store = await open_sql_store(str(self.info["databaseUrl"]))
            try:
                return await work(store)  # type: ignore[operator]
            finally:
                await store.close()

        return asyncio.run(run())

    def set_status(self, node_id: str, status: NodeStatus) -> None:
        async def work(store: object) -> None:
            await store.nodes.set_status(  # type: ignore[attr-defined]
                NodeID(node_id), new=status,
                expected=frozenset({NodeStatus.READY, NodeStatus.DRAINING}),
            )  # fmt: skip

        self.store(work)

    def holders(self, artifact: str) -> dict[str, str]:
        async def work(store: object) -> dict[str, str]:
            found = await store.artifacts.holders(artifact)  # type: ignore[attr-defined]
            return {h.node_id: h.state for h in found}

        return self.store(work)  # type: ignore[return-value]


def _leftovers() -> list[str]:
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    names = [*netns.split(), *(line.split(":")[1].strip() for line in links.splitlines())]
    mounts = [m for m in Path("/proc/mounts").read_text().splitlines() if "/hutch-art-" in m]
    return [n for n in names if n.startswith(PREFIX)] + mounts


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if os.geteuid() != 0:
        machine_lacks("a cluster's nodes need root")
    if not Path("/var/lib/hutch/templates/base/template.json").is_file():
        machine_lacks("install.sh's base template")
    home = Path(tempfile.mkdtemp(prefix="hutch-art-"))
    assert _leftovers() == []
    up = subprocess.run(
        [*HUTCH, "cluster", "up", "--home", str(home), "--nodes", "2", "--apis", "1",
         "--names", PREFIX, "--subnet", SUBNET, "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert up.returncode == 0, up.stderr
    info = json.loads(up.stdout)
    try:
        yield Cluster(home, info)
    finally:
        down = subprocess.run([*HUTCH, "cluster", "down", "--home", str(home)], timeout=300,
                              capture_output=True, text=True)  # fmt: skip
        shutil.rmtree(home, ignore_errors=True)
        assert down.returncode == 0, down.stderr
        assert _leftovers() == []


def test_artifacts_a_snapshot_taken_on_one_node_starts_on_the_other(cluster: Cluster) -> None:
    cluster.set_status("node-2", NodeStatus.DRAINING)
    source = Sandbox.create("base", timeout=180, **cluster.sdk())
    made: list[Sandbox] = [source]
    try:
        assert cluster.node_of(source.sandbox_id) == "node-1"
        # A cluster's node forks envd from its zygote by default (ADR 39), as serve's does.
        assert cluster.envd_pid("node-1", source.sandbox_id) > 0
        source.files.write("/home/user/marker.txt", "made on node-1")
        snap = source.create_snapshot().snapshot_id
        # At first only node-1 holds it: on its disk and in the store.
        assert (cluster.templates("node-1") / snap / "template.json").is_file()
        assert not (cluster.templates("node-2") / snap).exists()
        assert cluster.holders(snap) == {"node-1": "held"}

        cluster.set_status("node-2", NodeStatus.READY)
        cluster.set_status("node-1", NodeStatus.DRAINING)
        child = Sandbox.create(snap, timeout=180, **cluster.sdk())
        made.append(child)
        assert cluster.node_of(child.sandbox_id) == "node-2"
        assert cluster.envd_pid("node-2", child.sandbox_id) > 0  # a snapshot's too
        assert child.files.read("/home/user/marker.txt") == "made on node-1"
        assert child.commands.run("echo $((6 * 7))").stdout.strip() == "42"
        assert cluster.holders(snap) == {"node-1": "held", "node-2": "held"}
        fetched = cluster.templates("node-2") / ".snapshots" / snap / "layer"
        assert (fetched / "home" / "user" / "marker.txt").read_text() == "made on node-1"
        assert not any((cluster.templates("node-2") / ".incoming").iterdir())

        for sbx in made:
            sbx.kill()
        made.clear()
        assert Sandbox.delete_snapshot(snap, **cluster.sdk()) is True
        assert cluster.holders(snap) == {}
        for node in ("node-1", "node-2"):
            assert not (cluster.templates(node) / snap).exists(), node
            assert not (cluster.templates(node) / ".snapshots" / snap).exists(), node
    finally:
        for sbx in made:
            sbx.kill()
        cluster.set_status("node-1", NodeStatus.READY)


def test_artifacts_an_image_imported_on_one_node_starts_on_the_other(
    cluster: Cluster, tmp_path: Path
) -> None:
    archive = write_docker_archive(tmp_path / "busybox-app.tar", busybox_layers(),
                                   **BUSYBOX_CONFIG)  # fmt: skip
    sdk = cluster.sdk()
    api = httpx.Client(base_url=sdk["api_url"], headers={"X-API-Key": sdk["api_key"]},
                       timeout=300)  # fmt: skip
    name = "clusterimg"
    r = api.post("/templates/from-image", json={"source": f"docker-archive:{archive}",
                                                "name": name, "memoryMB": 128})  # fmt: skip
    assert r.status_code == 201, r.text
    assert r.json()["templateID"] == name
    holders = cluster.holders(name)
    assert list(holders.values()) == ["held"], holders
    (imported,) = holders
    other = "node-2" if imported == "node-1" else "node-1"
    assert (cluster.templates(imported) / name / "template.json").is_file()
    assert not (cluster.templates(other) / name).exists()

    cluster.set_status(imported, NodeStatus.DRAINING)
    sbx: Sandbox | None = None
    try:
        sbx = Sandbox.create(name, timeout=180, **sdk)
        assert cluster.node_of(sbx.sandbox_id) == other
        assert sbx.files.read("/etc/motd") == "hello from the image\n"
        assert sbx.commands.run("echo $((6 * 7))").stdout.strip() == "42"
        assert cluster.holders(name) == {imported: "held", other: "held"}
        sbx.kill()
        sbx = None
        assert api.delete(f"/templates/{name}").status_code == 204
        assert cluster.holders(name) == {}
        for node in ("node-1", "node-2"):
            assert not (cluster.templates(node) / name).exists(), node
    finally:
        if sbx is not None:
            sbx.kill()
        cluster.set_status(imported, NodeStatus.READY)
        api.close()


def test_artifacts_an_sdk_build_on_one_node_starts_on_the_other(
    cluster: Cluster, tmp_path: Path
) -> None:
    """``Template.build`` through the cluster api (its nodes register): the build runs on a
    node the build worker chose, which got the ``COPY`` archive from the store; that node
    holds the template and its ``name@build`` version; drained, the other node fetches it."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "hello.txt").write_text("copied through the store\n")
    template = (
        Template(file_context_path=str(ctx))
        .from_template("busybox")
        .run_cmd("echo built-in-cluster > /tmp/built.txt")
        .copy("hello.txt", "/home/user/")
    )
    sdk = cluster.sdk()
    logs: list[str] = []
    name = "clusterbuilt"
    info = Template.build(template, name, on_build_logs=lambda e: logs.append(e.message),
                          api_key=sdk["api_key"], api_url=sdk["api_url"])  # fmt: skip
    assert any("RUN echo built-in-cluster" in line for line in logs), logs
    built = next(line.rsplit(" ", 1)[1] for line in logs if line.startswith("building on node"))
    version = f"{name}@{info.build_id}"
    assert cluster.holders(name) == {built: "held"}
    assert cluster.holders(version) == {built: "held"}
    other = "node-2" if built == "node-1" else "node-1"
    assert not (cluster.templates(other) / name).exists()

    cluster.set_status(built, NodeStatus.DRAINING)
    sbx: Sandbox | None = None
    api = httpx.Client(base_url=sdk["api_url"], headers={"X-API-Key": sdk["api_key"]},
                       timeout=300)  # fmt: skip
    try:
        sbx = Sandbox.create(name, timeout=180, **sdk)
        assert cluster.node_of(sbx.sandbox_id) == other
        assert sbx.files.read("/tmp/built.txt") == "built-in-cluster\n"
        assert sbx.files.read("/home/user/hello.txt") == "copied through the store\n"
        sbx.kill()
        sbx = None
        assert api.delete(f"/templates/{name}").status_code == 204
    finally:
        if sbx is not None:
            sbx.kill()
        cluster.set_status(built, NodeStatus.READY)
        api.close()
