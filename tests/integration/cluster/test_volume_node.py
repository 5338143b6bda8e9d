"""A local volume lives on one node (ADR 0034), through the real api and wire with fake
nodes: ``POST /volumes`` creates it on a ready node over the node API, every create that
mounts it is placed there even when another node is less loaded, and when that node cannot
take a sandbox (draining, refusing) the create is a 503 ``volume_node_unavailable`` naming
the volume and the node, never a placement on a node without the volume's data. Its node
down: the volume's calls are that 503 too, and a delete keeps the volume to be retried."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

from hutch.shared.errors import ResourceExhaustedError
from tests.integration.cluster.conftest import ClusterApi, FakeNodeApi
from tests.integration.cluster.test_placement import _join


def test_a_local_volume_pins_its_sandboxes_to_its_node(
    cluster_api: ClusterApi, fake_nodes: Callable[..., FakeNodeApi]
) -> None:
    a, b = fake_nodes("node-a"), fake_nodes("node-b")
    _join(cluster_api, a, b)
    with cluster_api.member() as c, cluster_api.admin() as admin:
        r = c.post("/volumes", json={"name": "data", "sizeMB": 8})
        assert r.status_code == 201, r.text
        vol = r.json()["volumeID"]
        # Made on one node (the most free disk; node-a first by id among equals), there only.
        assert a.volumes is not None and b.volumes is not None
        assert a.volumes.created == {vol: 8 << 20} and not b.volumes.created
        assert c.get(f"/volumes/{vol}").json()["totalBytes"] == 8 << 20  # its node's usage
        body = {"templateID": "base", "volumeMounts": [{"name": "data", "path": "/mnt/data"}]}
        try:
            first = c.post("/v2/sandboxes", json=body)
            assert first.status_code == 201, first.text
            assert first.json()["sandboxID"] in a.sandboxes.running
            home, other = a, b
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
            # Its node refusing (full): 503 too, not the next node, where the data is not.
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
    """Concurrent creates that mount the volume, through their own connections, all land
    on the volume's node (and succeed), although least-allocated would spread them."""
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
            home = a if vol in (a.volumes.created if a.volumes else {}) else b
            assert ids <= set(home.sandboxes.running)
            assert not ids & set((b if home is a else a).sandboxes.running)
        finally:
            assert c.delete(f"/volumes/{vol}", params={"force": "true"}).status_code == 204


def test_a_volume_whose_node_is_down_answers_503_and_survives_a_delete(
    cluster_api: ClusterApi, fake_nodes: Callable[..., FakeNodeApi]
) -> None:
    """A new volume goes to a ready node (not a draining one). Its node down: ``GET
    /volumes/{id}`` still answers (no usage), the content API, mounting creates and the
    delete are 503 ``volume_node_unavailable`` naming the volume and the node, and the
    volume is still there; the node back, the delete reaches it."""
    a, b = fake_nodes("node-a"), fake_nodes("node-b")
    _join(cluster_api, a, b)
    with cluster_api.member() as c, cluster_api.admin() as admin:
        assert admin.post("/nodes/node-a", json={"status": "draining"}).status_code == 204
        r = c.post("/volumes", json={"name": "far", "sizeMB": 8})
        assert r.status_code == 201, r.text
        vol, token = r.json()["volumeID"], r.json()["token"]
        assert b.volumes is not None and vol in b.volumes.created
        assert admin.post("/nodes/node-a", json={"status": "ready"}).status_code == 204
        b.stop()

        def unavailable(r: httpx.Response) -> None:
            assert r.status_code == 503, r.text
            assert r.json()["error_code"] == "volume_node_unavailable"
            assert f"({vol}) lives on node node-b" in r.json()["message"]

        got = c.get(f"/volumes/{vol}")
        assert got.status_code == 200 and "usedBytes" not in got.json()
        auth = {"Authorization": f"Bearer {token}"}
        unavailable(c.get(f"/volumecontent/{vol}/dir", params={"path": "/"}, headers=auth))
        unavailable(c.put(f"/volumecontent/{vol}/file", params={"path": "/x"}, headers=auth,
                          content=b"data"))  # fmt: skip
        unavailable(c.delete(f"/volumes/{vol}"))
        assert c.get(f"/volumes/{vol}").status_code == 200  # kept, to be deleted later
        r = c.post("/v2/sandboxes", json={
            "templateID": "base", "volumeMounts": [{"name": "far", "path": "/m"}],
        })  # fmt: skip
        assert r.status_code == 503 and r.json()["error_code"] == "volume_node_unavailable"
        assert not a.sandboxes.running  # never placed where the data is not
        back = fake_nodes("node-b")
        _join(cluster_api, back)
        # The refused create's row waits for its node's answer (``killing``): force.
        assert c.delete(f"/volumes/{vol}", params={"force": "true"}).status_code == 204
        assert back.volumes is not None and back.volumes.deleted == [vol]
        assert c.get(f"/volumes/{vol}").status_code == 404
