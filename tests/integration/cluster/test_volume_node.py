"""A local volume lives on one node (ADR 0034), through the real api and wire with fake
nodes: the first create that mounts it claims its node, every later one is placed there
even when another node is less loaded, and when that node cannot take a sandbox
(draining, refusing) the create is a 503 ``volume_node_unavailable`` naming the volume
and the node, never a placement on a node without the volume's data."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

from hutch.shared.errors import ResourceExhaustedError
from tests.conftest import machine_lacks
from tests.integration.cluster.conftest import ClusterApi, FakeNodeApi
from tests.integration.cluster.test_placement import _join


def test_a_local_volume_pins_its_sandboxes_to_its_node(
    cluster_api: ClusterApi, fake_nodes: Callable[..., FakeNodeApi]
) -> None:
    if os.geteuid() != 0 or shutil.which("mkfs.ext4") is None:
        machine_lacks("the api's local volumes need root and mkfs.ext4 (loop mounts)")
    a, b = fake_nodes("node-a"), fake_nodes("node-b")
    _join(cluster_api, a, b)
    with cluster_api.member() as c, cluster_api.admin() as admin:
        r = c.post("/volumes", json={"name": "data", "sizeMB": 8})
        assert r.status_code == 201, r.text
        vol = r.json()["volumeID"]
        body = {"templateID": "base", "volumeMounts": [{"name": "data", "path": "/mnt/data"}]}
        try:
            # node-a (first by id among equals) refuses the first mount: the volume is not
            # left claimed by it, the create goes on to node-b and the volume lives there.
            a.sandboxes.fail_next = ResourceExhaustedError("node full")
            first = c.post("/v2/sandboxes", json=body)
            assert first.status_code == 201, first.text
            assert first.json()["sandboxID"] in b.sandboxes.running
            home, other = b, a
            # Least allocated would alternate; the volume keeps every create on its node.
            for _ in range(3):
                r = c.post("/v2/sandboxes", json=body)
                assert r.status_code == 201, r.text
                assert r.json()["sandboxID"] in home.sandboxes.running
            assert not other.sandboxes.running
            # A sandbox without the volume still goes to the less loaded node.
            r = c.post("/v2/sandboxes", json={"templateID": "base"})
            assert r.status_code == 201 and r.json()["sandboxID"] in other.sandboxes.running

            def refused(why: str) -> None:
                r = c.post("/v2/sandboxes", json=body)
                assert r.status_code == 503, r.text
                assert r.headers["Should-Retry"] == "true"
                err = r.json()
                assert err["error_code"] == "volume_node_unavailable"
                assert f"'data' ({vol})" in err["message"]
                assert f"lives on node {home.node_id}" in err["message"]
                assert why in err["message"]
                assert len(other.sandboxes.running) == 1  # nothing placed elsewhere

            # Its node draining: 503, although the other node has room.
            status = f"/nodes/{home.node_id}"
            assert admin.post(status, json={"status": "draining"}).status_code == 204
            refused("draining")
            assert admin.post(status, json={"status": "ready"}).status_code == 204
            # Its node refusing (full): 503 too, not the next node.
            home.sandboxes.fail_next = ResourceExhaustedError("node full")
            refused("refused")
            # Its node back: the volume's creates go there again.
            r = c.post("/v2/sandboxes", json=body)
            assert r.status_code == 201 and r.json()["sandboxID"] in home.sandboxes.running
        finally:
            assert c.delete(f"/volumes/{vol}", params={"force": "true"}).status_code == 204


def test_racing_first_mounts_of_a_local_volume_end_on_one_node(
    cluster_api: ClusterApi, fake_nodes: Callable[..., FakeNodeApi]
) -> None:
    """Creates that all read "no node yet" for the volume race to claim it: the losers are
    rolled back and placed again on the winner's node, so every one succeeds there."""
    if os.geteuid() != 0 or shutil.which("mkfs.ext4") is None:
        machine_lacks("the api's local volumes need root and mkfs.ext4 (loop mounts)")
    a, b = fake_nodes("node-a"), fake_nodes("node-b")
    _join(cluster_api, a, b)
    with cluster_api.member() as c:
        r = c.post("/volumes", json={"name": "race", "sizeMB": 8})
        assert r.status_code == 201, r.text
        vol = r.json()["volumeID"]
        body = {"templateID": "base", "volumeMounts": [{"name": "race", "path": "/mnt/r"}]}

        def create(_: int) -> httpx.Response:
            with cluster_api.member() as own:
                return own.post("/v2/sandboxes", json=body)

        try:
            with ThreadPoolExecutor(8) as pool:
                results = list(pool.map(create, range(8)))
            assert [r.status_code for r in results] == [201] * 8, [r.text for r in results]
            ids = {r.json()["sandboxID"] for r in results}
            on = [n for n in (a, b) if ids & set(n.sandboxes.running)]
            assert len(on) == 1 and ids <= set(on[0].sandboxes.running)
        finally:
            assert c.delete(f"/volumes/{vol}", params={"force": "true"}).status_code == 204


def test_a_node_without_the_volumes_data_refuses_its_first_mount(
    cluster_api: ClusterApi, fake_nodes: Callable[..., FakeNodeApi]
) -> None:
    """A node that does not see the api's volumes directory refuses to mount a local
    volume: the first mount goes on to a node that does, and the volume lives there."""
    if os.geteuid() != 0 or shutil.which("mkfs.ext4") is None:
        machine_lacks("the api's local volumes need root and mkfs.ext4 (loop mounts)")
    a, b = fake_nodes("node-a"), fake_nodes("node-b")
    assert a.volumes is not None and b.volumes is not None
    a.volumes.holds_nothing = True
    _join(cluster_api, a, b)
    with cluster_api.member() as c:
        r = c.post("/volumes", json={"name": "seen", "sizeMB": 8})
        assert r.status_code == 201, r.text
        vol = r.json()["volumeID"]
        body = {"templateID": "base", "volumeMounts": [{"name": "seen", "path": "/mnt/s"}]}
        try:
            for _ in range(2):
                r = c.post("/v2/sandboxes", json=body)
                assert r.status_code == 201, r.text
                assert r.json()["sandboxID"] in b.sandboxes.running
            assert not a.sandboxes.running
            # No node sees a new volume's data: 503 saying so, nothing left running.
            b.volumes.holds_nothing = True
            r = c.post("/volumes", json={"name": "unseen", "sizeMB": 8})
            assert r.status_code == 201, r.text
            other = r.json()["volumeID"]
            try:
                r = c.post("/v2/sandboxes", json={
                    "templateID": "base", "volumeMounts": [{"name": "unseen", "path": "/m"}],
                })  # fmt: skip
                assert r.status_code == 503, r.text
                assert f"volume {other}: its data is not on node node-a" in r.json()["message"]
                assert f"volume {other}: its data is not on node node-b" in r.json()["message"]
                assert len(b.sandboxes.running) == 2 and not a.sandboxes.running
            finally:
                assert c.delete(f"/volumes/{other}").status_code == 204
        finally:
            assert c.delete(f"/volumes/{vol}", params={"force": "true"}).status_code == 204
