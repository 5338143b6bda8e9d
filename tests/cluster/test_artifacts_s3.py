"""Templates and snapshots across nodes through the S3 artifact store (ADR 0029 amendment),
in a real cluster: ``hutch cluster up --nodes 2`` whose nodes share no directory and publish
to a bucket of a moto server on loopback (``--node-setting artifact_s3_*``), driven by the
official ``e2b`` SDK through the edge.

A snapshot taken on node-1 is in the bucket when the snapshot call answers; node-1 is then
drained and SIGKILLed, so no peer can serve it, and a create from the snapshot lands on
node-2, which pulls it from the bucket and boots with the snapshot's files. An image
imported through the api is in the bucket when the import answers; its node is drained and
killed, and the other node starts it from the bucket. Deleting either removes its objects
from the bucket. Host names ``ho<slot><n>*``, subnets ``10.<190+slot>.<n>.0/24`` (any slot
0-9): distinct from the other cluster tests'; run under the host-tests flock like them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2b import Sandbox

from hutch.api.nodes_model import NodeStatus
from hutch.cluster import local
from tests.cluster.test_artifacts import HUTCH, Cluster
from tests.conftest import machine_lacks
from tests.imagebuild import BUSYBOX_CONFIG, busybox_layers, write_docker_archive
from tests.s3server import S3_ENV, moto_server, new_bucket, s3_test_client

SLOT = int(os.environ.get("HUTCH_TEST_SLOT", "0") or "0")
PREFIX = f"ho{SLOT}"
SUBNET = f"10.{190 + SLOT}"
KEYS = "c/"  # the store's key prefix in the bucket


class S3Cluster(Cluster):
    def __init__(self, home: Path, info: dict[str, object], client: Any, bucket: str) -> None:
        super().__init__(home, info)
        self.client, self.bucket = client, bucket
        self.dead: set[str] = set()

    def objects(self) -> list[str]:
        listed = self.client.list_objects_v2(Bucket=self.bucket, Prefix=KEYS)
        return sorted(o["Key"].removeprefix(KEYS) for o in listed.get("Contents", []))

    def manifest(self, name: str) -> dict[str, Any] | None:
        key = f"{KEYS}manifests/{name}.json"
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None
        return json.loads(body)  # type: ignore[no-any-return]

    def kill_node(self, node_id: str) -> None:
        """SIGKILL the node's process (its sandboxes were killed first): no peer route."""
        pid = int(next(p for p in self.procs("node") if p["id"] == node_id)["pid"])  # type: ignore[call-overload]
        os.kill(pid, signal.SIGKILL)
        self.dead.add(node_id)
        deadline = time.monotonic() + 60
        while _running(pid):
            assert time.monotonic() < deadline, f"{node_id} (pid {pid}) outlived SIGKILL"
            time.sleep(0.05)

    def restart_node(self, node_id: str) -> None:
        # A registration keeps a drain, and start_node waits for a ready row: undrain first.
        self.set_status(node_id, NodeStatus.READY)
        proc = local.start_node(self.home, node_id)  # its settings and this process's AWS_*
        self.dead.discard(node_id)
        for each in self.info["processes"]:  # type: ignore[attr-defined]
            if each["id"] == node_id:
                each["pid"] = proc.pid

    def node_of(self, sandbox_id: str) -> str:
        token = (self.home / "cluster.token").read_text().strip()
        for node in self.procs("node"):
            if node["id"] in self.dead:
                continue
            listed = httpx.get(f"{node['url']}/v1/sandboxes", timeout=10,
                               headers={"Authorization": f"Bearer {token}"}).json()  # fmt: skip
            if any(s["sandbox_id"] == sandbox_id for s in listed["sandboxes"]):
                return str(node["id"])
        raise AssertionError(f"{sandbox_id} runs on no live node")


def _running(pid: int) -> bool:
    """Whether ``pid`` is a process that has not exited (a zombie has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _leftovers() -> list[str]:
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    names = [*netns.split(), *(line.split(":")[1].strip() for line in links.splitlines())]
    mounts = [m for m in Path("/proc/mounts").read_text().splitlines() if "/hutch-s3art-" in m]
    return [n for n in names if n.startswith(PREFIX)] + mounts


@pytest.fixture(scope="module")
def cluster() -> Iterator[S3Cluster]:
    if os.geteuid() != 0:
        machine_lacks("a cluster's nodes need root")
    if not Path("/var/lib/hutch/templates/busybox/template.json").is_file():
        machine_lacks("install.sh's busybox template")
    home = Path(tempfile.mkdtemp(prefix="hutch-s3art-"))
    assert _leftovers() == []
    with pytest.MonkeyPatch.context() as env, moto_server(home / "moto.log") as endpoint:
        # The nodes' credentials: boto3's chain reads them from the environment `cluster
        # up` (and start_node, for a node started again) hands every node.
        for key, value in {**S3_ENV, "AWS_EC2_METADATA_DISABLED": "true"}.items():
            env.setenv(key, value)
        client = s3_test_client(endpoint)
        bucket = new_bucket(client, "hutch-cluster")
        settings = {"artifact_s3_bucket": bucket, "artifact_s3_endpoint_url": endpoint,
                    "artifact_s3_prefix": KEYS, "artifact_s3_part_mb": "5"}  # fmt: skip
        up = subprocess.run(
            [*HUTCH, "cluster", "up", "--home", str(home), "--nodes", "2", "--apis", "1",
             "--names", PREFIX, "--subnet", SUBNET, "--json",
             *(f"--node-setting={k}={v}" for k, v in settings.items())],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert up.returncode == 0, up.stderr
        try:
            yield S3Cluster(home, json.loads(up.stdout), client, bucket)
        finally:
            down = subprocess.run([*HUTCH, "cluster", "down", "--home", str(home)],
                                  timeout=300, capture_output=True, text=True)  # fmt: skip
            shutil.rmtree(home, ignore_errors=True)
            assert down.returncode == 0, down.stderr
            assert _leftovers() == []


def test_artifacts_s3_a_snapshot_starts_on_another_node_with_its_holder_gone(
    cluster: S3Cluster,
) -> None:
    cluster.set_status("node-2", NodeStatus.DRAINING)
    source = Sandbox.create("busybox", timeout=180, **cluster.sdk())
    made: list[Sandbox] = [source]
    killed = False
    try:
        assert cluster.node_of(source.sandbox_id) == "node-1"
        source.files.write("/home/user/marker.txt", "made on node-1")
        snap = source.create_snapshot().snapshot_id
        # In the bucket when the snapshot answers: its manifest, its layer's part, and its
        # own-tree base (busybox) published with it.
        record = cluster.manifest(snap)
        assert record is not None and set(record["digests"]) == {f"layer/{snap}"}
        assert cluster.manifest("busybox") is not None
        layer_part = "parts/{}.tar".format(record["digests"][f"layer/{snap}"].split(":")[1])
        assert layer_part in cluster.objects()
        source.kill()
        made.clear()

        cluster.set_status("node-1", NodeStatus.DRAINING)
        cluster.kill_node("node-1")  # the only holder, gone: the bucket is all there is
        killed = True
        cluster.set_status("node-2", NodeStatus.READY)
        child = Sandbox.create(snap, timeout=180, **cluster.sdk())
        made.append(child)
        assert cluster.node_of(child.sandbox_id) == "node-2"
        assert child.files.read("/home/user/marker.txt") == "made on node-1"
        assert child.commands.run("echo $((6 * 7))").stdout.strip() == "42"
        fetched = cluster.templates("node-2") / ".snapshots" / snap / "layer"
        assert (fetched / "home" / "user" / "marker.txt").read_text() == "made on node-1"
        assert not any((cluster.templates("node-2") / ".incoming").iterdir())
        child.kill()
        made.clear()

        assert Sandbox.delete_snapshot(snap, **cluster.sdk()) is True
        assert cluster.manifest(snap) is None
        assert layer_part not in cluster.objects()
        assert not (cluster.templates("node-2") / ".snapshots" / snap).exists()
    finally:
        for sbx in made:
            sbx.kill()
        if killed:
            cluster.restart_node("node-1")
        cluster.set_status("node-1", NodeStatus.READY)
        cluster.set_status("node-2", NodeStatus.READY)


def test_artifacts_s3_an_imported_image_starts_on_another_node_with_its_holder_gone(
    cluster: S3Cluster, tmp_path: Path
) -> None:
    archive = write_docker_archive(tmp_path / "busybox-app.tar", busybox_layers(),
                                   **BUSYBOX_CONFIG)  # fmt: skip
    sdk = cluster.sdk()
    api = httpx.Client(base_url=sdk["api_url"], headers={"X-API-Key": sdk["api_key"]},
                       timeout=300)  # fmt: skip
    name = "s3img"
    r = api.post("/templates/from-image", json={"source": f"docker-archive:{archive}",
                                                "name": name, "memoryMB": 128})  # fmt: skip
    assert r.status_code == 201, r.text
    (imported,) = cluster.holders(name)
    other = "node-2" if imported == "node-1" else "node-1"
    record = cluster.manifest(name)
    assert record is not None and [d.split("/")[0] for d in record["digests"]] == ["artifact"]
    parts = [p for p in cluster.objects() if p.startswith("parts/")]

    cluster.set_status(imported, NodeStatus.DRAINING)
    cluster.kill_node(imported)
    sbx: Sandbox | None = None
    try:
        sbx = Sandbox.create(name, timeout=180, **sdk)
        assert cluster.node_of(sbx.sandbox_id) == other
        assert sbx.files.read("/etc/motd") == "hello from the image\n"
        sbx.kill()
        sbx = None
        assert api.delete(f"/templates/{name}").status_code == 204
        assert cluster.manifest(name) is None
        assert not (cluster.templates(other) / name).exists()
        image_parts = {f"parts/{d.split(':')[1]}.tar" for d in record["digests"].values()}
        assert image_parts <= set(parts)  # it was there, and now it is gone
        assert not image_parts & set(cluster.objects())
    finally:
        if sbx is not None:
            sbx.kill()
        cluster.restart_node(imported)
        cluster.set_status(imported, NodeStatus.READY)
        api.close()
