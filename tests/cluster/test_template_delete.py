"""A template delete in a real cluster (ADR 0037): ``hutch cluster up --nodes 2`` with a
shared artifact directory, the official ``e2b`` SDK through the edge. An image imported on
one node is fetched by the other; a sandbox and a snapshot of it run on the importer. With
the other node SIGKILLed, ``DELETE /templates/{id}`` answers 204: the importer's copy and
the artifact directory's manifest go, its running sandbox keeps working and the snapshot
still starts (what they need stays); the node that was down still has its copy, marked
``deleting`` in the store, and deletes it when it comes back. Host names ``ht<slot><n>*``,
subnets ``10.<180+slot>.<n>.0/24``; run under ``flock /tmp/hutch-hosttests.lock``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2b import Sandbox

from hutch.api.nodes_model import NodeStatus
from tests.cluster.test_artifacts import HUTCH
from tests.cluster.test_artifacts_s3 import S3Cluster
from tests.conftest import machine_lacks
from tests.imagebuild import BUSYBOX_CONFIG, busybox_layers, write_docker_archive

SLOT = int(os.environ.get("HUTCH_TEST_SLOT", "0") or "0")
PREFIX = f"ht{SLOT}"
SUBNET = f"10.{180 + SLOT}"


class DirCluster(S3Cluster):
    """``S3Cluster``'s node kill and restart, over a shared artifact directory."""

    def __init__(self, home: Path, info: dict[str, object], store: Path) -> None:
        super().__init__(home, info, client=None, bucket="")
        self.artifact_dir = store

    def manifests(self) -> list[str]:
        return sorted(p.name for p in (self.artifact_dir / "manifests").glob("*.json"))


def _leftovers() -> list[str]:
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    names = [*netns.split(), *(line.split(":")[1].strip() for line in links.splitlines())]
    mounts = [m for m in Path("/proc/mounts").read_text().splitlines() if "/hutch-tdel-" in m]
    return [n for n in names if n.startswith(PREFIX)] + mounts


@pytest.fixture(scope="module")
def cluster() -> Iterator[DirCluster]:
    if os.geteuid() != 0:
        machine_lacks("a cluster's nodes need root")
    if not Path("/var/lib/hutch/templates/busybox/template.json").is_file():
        machine_lacks("install.sh's busybox template")
    home = Path(tempfile.mkdtemp(prefix="hutch-tdel-"))
    store = home / "artifacts"
    store.mkdir()
    assert _leftovers() == []
    up = subprocess.run(
        [*HUTCH, "cluster", "up", "--home", str(home), "--nodes", "2", "--apis", "1",
         "--names", PREFIX, "--subnet", SUBNET, "--json",
         f"--node-setting=artifact_dir={store}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert up.returncode == 0, up.stderr
    try:
        yield DirCluster(home, json.loads(up.stdout), store)
    finally:
        down = subprocess.run([*HUTCH, "cluster", "down", "--home", str(home)], timeout=300,
                              capture_output=True, text=True)  # fmt: skip
        shutil.rmtree(home, ignore_errors=True)
        assert down.returncode == 0, down.stderr
        assert _leftovers() == []


def test_template_delete_reaches_the_node_that_was_down_and_keeps_what_users_need(
    cluster: DirCluster, tmp_path: Path
) -> None:
    archive = write_docker_archive(tmp_path / "busybox-app.tar", busybox_layers(),
                                   **BUSYBOX_CONFIG)  # fmt: skip
    sdk = cluster.sdk()
    api = httpx.Client(base_url=sdk["api_url"], headers={"X-API-Key": sdk["api_key"]},
                       timeout=300)  # fmt: skip
    name = "delimg"
    made: list[Sandbox] = []
    killed: str | None = None
    try:
        r = api.post("/templates/from-image", json={"source": f"docker-archive:{archive}",
                                                    "name": name, "memoryMB": 128})  # fmt: skip
        assert r.status_code == 201, r.text
        (imported,) = cluster.holders(name)
        other = "node-2" if imported == "node-1" else "node-1"
        assert f"{name}.json" in cluster.manifests()

        # The other node fetches it for a create, then holds it too.
        cluster.set_status(imported, NodeStatus.DRAINING)
        fetched = Sandbox.create(name, timeout=180, **sdk)
        assert cluster.node_of(fetched.sandbox_id) == other
        fetched.kill()
        assert cluster.holders(name) == {imported: "held", other: "held"}
        assert (cluster.templates(other) / name / "template.json").is_file()
        cluster.set_status(imported, NodeStatus.READY)

        # On the importer: a sandbox that stays running and a snapshot of one.
        cluster.set_status(other, NodeStatus.DRAINING)
        running = Sandbox.create(name, timeout=300, **sdk)
        made.append(running)
        assert cluster.node_of(running.sandbox_id) == imported
        running.files.write("/home/user/marker.txt", "before the delete")
        snap = running.create_snapshot().snapshot_id
        assert f"{snap}.json" in cluster.manifests()

        cluster.kill_node(other)
        killed = other
        assert api.delete(f"/templates/{name}").status_code == 204
        assert not (cluster.templates(imported) / name).exists()
        assert f"{name}.json" not in cluster.manifests()
        assert f"{snap}.json" in cluster.manifests()
        # What the running sandbox and the snapshot need stayed.
        assert running.files.read("/etc/motd") == "hello from the image\n"
        assert running.commands.run("echo $((6 * 7))").stdout.strip() == "42"
        child = Sandbox.create(snap, timeout=180, **sdk)
        made.append(child)
        assert child.files.read("/home/user/marker.txt") == "before the delete"
        assert child.files.read("/etc/motd") == "hello from the image\n"
        # E2B's answers for a template that is gone.
        assert api.post("/v2/sandboxes", json={"templateID": name}).status_code == 404
        assert api.delete(f"/templates/{name}").status_code == 404

        # The node that was down kept its copy; it deletes it when it is back.
        assert (cluster.templates(other) / name / "template.json").is_file()
        assert cluster.holders(name) == {other: "deleting"}
        cluster.restart_node(other)
        killed = None
        deadline = time.monotonic() + 60
        while cluster.holders(name) or (cluster.templates(other) / name).exists():
            assert time.monotonic() < deadline, cluster.holders(name)
            time.sleep(0.2)
        assert f"{name}.json" not in cluster.manifests()
    finally:
        for sbx in made:
            sbx.kill()
        if killed is not None:
            cluster.restart_node(killed)
        for node in ("node-1", "node-2"):
            cluster.set_status(node, NodeStatus.READY)
        api.close()
