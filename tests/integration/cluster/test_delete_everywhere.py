"""``DELETE /templates/{id}`` on a cluster (ADR 0037): the template and its kept
``name@build`` versions go from every node that holds them, not only the one that built it;
nodes that are down (holders or not) delete it when they register again, and the store's
holdings end empty. Real api (SQLite and PostgreSQL) and the official SDK's build; nodes
over fakes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hutch.api.service.artifacts import ArtifactService
from hutch.api.store.sql import open_sql_store
from hutch.shared.errors import UnavailableError
from hutch.shared.ids import NodeID
from tests.integration.cluster.conftest import ClusterApi, run_async
from tests.integration.cluster.test_artifacts import BASE, BUSYBOX, _holdings, _join, _node


def _record(url: str, artifact: str, node_id: str) -> None:
    async def run() -> None:
        store = await open_sql_store(url)
        try:
            await store.artifacts.record(artifact, NodeID(node_id))
        finally:
            await store.close()

    run_async(run)


def test_a_template_delete_reaches_every_holder_and_the_nodes_that_were_down(
    cluster_api: ClusterApi, tmp_path: Path
) -> None:
    from e2b import Template

    api = cluster_api
    a, _, a_files = _node(tmp_path, "node-a", (BASE, BUSYBOX))
    b, _, _ = _node(tmp_path, "node-b", (BASE, BUSYBOX))
    c, _, _ = _node(tmp_path, "node-c", (BASE, BUSYBOX))
    restarted = []
    try:
        for node in (a, b, c):
            _join(api, node, (BASE, BUSYBOX))
        a_files.build_release.set()
        with api.admin() as admin, api.member() as member:
            for other in ("node-b", "node-c"):
                assert admin.post(f"/nodes/{other}", json={"status": "draining"}).status_code == 204
            info = Template.build(Template().from_template("busybox").run_cmd("true"), "gone",
                                  api_url=api.url, api_key=api.key)  # fmt: skip
            tid, version = info.template_id, f"{info.template_id}@{info.build_id}"
            assert _holdings(api.database_url, tid) == {"node-a": "held"}
            assert _holdings(api.database_url, version) == {"node-a": "held"}
            # node-b fetches it for a create (the version its default tag names); node-c
            # holds the template itself (as after a fetch of it by id).
            assert admin.post("/nodes/node-b", json={"status": "ready"}).status_code == 204
            assert admin.post("/nodes/node-a", json={"status": "draining"}).status_code == 204
            r = member.post("/v2/sandboxes", json={"templateID": "gone"})
            assert r.status_code == 201, r.text
            assert r.json()["sandboxID"] in b.sandboxes.running
            assert member.delete(f"/sandboxes/{r.json()['sandboxID']}").status_code == 204
            _record(api.database_url, tid, "node-c")
            assert _holdings(api.database_url, tid) == {"node-a": "held", "node-c": "held"}
            assert _holdings(api.database_url, version) == {"node-a": "held", "node-b": "held"}

            # node-b (only the version's holder) and node-c (the template's) are down.
            b.stop()
            c.stop()
            assert member.delete("/templates/gone").status_code == 204
            assert a_files.deleted == [tid]
            assert _holdings(api.database_url, tid) == {"node-b": "deleting", "node-c": "deleting"}
            assert _holdings(api.database_url, version) == {"node-b": "held"}
            r = member.post("/v2/sandboxes", json={"templateID": "gone"})
            assert r.status_code == 404, r.text  # E2B's: the template is gone
            assert member.delete("/templates/gone").status_code == 404

            # Back (restarted, registering again): each deletes it, the holdings end empty.
            for node_id in ("node-b", "node-c"):
                (tmp_path / f"{node_id}.sock").unlink(missing_ok=True)
                node, _, files = _node(tmp_path, node_id, (BASE, BUSYBOX, tid))
                restarted.append(node)
                _join(api, node, (BASE, BUSYBOX, tid))
                assert files.deleted == [tid], node_id
            assert _holdings(api.database_url, tid) == {}
            assert _holdings(api.database_url, version) == {}
    finally:
        for node in (a, b, c, *restarted):
            node.stop()


def test_a_delete_marks_every_registered_node_that_is_down_and_forgets_versions(
    tmp_path: Path,
) -> None:
    """``ArtifactService.delete_everywhere`` over the real store: a live node that holds
    only a version is asked, its version rows go; a holder whose lease the store does not
    see running (here: no node row) is marked; registered nodes that are down and hold
    nothing the store knows of (a fetch whose record was lost) are marked too, and each
    deletes when back."""

    async def run() -> None:
        store = await open_sql_store(f"sqlite+aiosqlite:///{tmp_path / 'h.db'}", migrate=True)
        try:
            service = ArtifactService(store.artifacts)
            await service.record("tpl", NodeID("n1"))
            await service.record("tpl@b1", NodeID("n2"))
            await service.record("tpl@b2", NodeID("n2"))
            await service.record("tpl_x@b1", NodeID("n2"))  # another template: kept
            calls: list[tuple[str, str]] = []
            down = {"n3"}

            async def delete_on(node_id: NodeID, name: str) -> None:
                if node_id in down:
                    raise UnavailableError(f"{node_id} does not answer")
                calls.append((node_id, name))

            await service.delete_everywhere(
                "tpl", live=[NodeID("n1"), NodeID("n2")], delete_on=delete_on,
                known=[NodeID("n1"), NodeID("n2"), NodeID("n3"), NodeID("n4")],
            )  # fmt: skip
            assert calls == [("n2", "tpl")]
            assert {h.node_id: h.state for h in await store.artifacts.holders("tpl")} == {
                "n1": "deleting", "n3": "deleting", "n4": "deleting",
            }  # fmt: skip
            assert await store.artifacts.version_holders("tpl") == []
            assert await store.artifacts.held(NodeID("n2")) == ["tpl_x@b1"]
            down.clear()
            assert await service.collect(NodeID("n1"), delete_on=delete_on) == ["tpl"]
            assert await service.collect(NodeID("n3"), delete_on=delete_on) == ["tpl"]
            assert await service.collect(NodeID("n4"), delete_on=delete_on) == ["tpl"]
            assert await store.artifacts.holders("tpl") == []
        finally:
            await store.close()

    asyncio.run(run())
