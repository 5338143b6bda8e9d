"""Templates across nodes through the real api and wire (ADR 0029), nodes over fakes: a
create prefers the node holding the template; placed on a node that lacks it, that node is
handed the holders' addresses and fetches (a fake fetch: the real one is
``tests/unit/node/test_artifact_transfer.py`` and ``tests/cluster/test_artifacts.py``),
the holding is recorded; a node that can fetch from nowhere refuses and the api answers a
precise 503, never a 404; a delete reaches every holder and marks the one that is down."""

from __future__ import annotations

import asyncio
import io
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path

import uvicorn

from hutch import __version__
from hutch.api.models import NewTemplate, TemplateBuildState
from hutch.api.store.sql import open_sql_store
from hutch.node.http.app import create_node_app
from hutch.node.membership import Registrar
from hutch.node.service import NodeIdentity, NodeService
from hutch.node.templates.transfer import Fetched
from hutch.shared import clusterwire as wire
from hutch.shared.errors import ArtifactUnavailableError
from hutch.shared.ids import NodeID, TemplateID
from tests.fakes.sandboxes import FakeSamples, FakeSandboxes, FakeTemplates
from tests.integration.cluster.conftest import (
    TOKEN,
    ClusterApi,
    FakeNodeApi,
    _thread_server,
    run_async,
)

BASE, BUSYBOX = "basetemplate00000001", "busyboxtemplate00001"


class FakeFetcher:
    """Records what it was asked; "fetches" by adding the name to the fake's templates."""

    def __init__(self, sandboxes: FakeSandboxes) -> None:
        self.sandboxes = sandboxes
        self.serves = True
        self.asked: list[tuple[str, list[str]]] = []

    async def ensure(self, name: str, sources: Sequence[str]) -> Fetched | None:
        if name in self.sandboxes.templates:
            return None
        self.asked.append((name, list(sources)))
        if not (self.serves and sources):
            raise ArtifactUnavailableError(f"template {name!r} could not be fetched here")
        self.sandboxes.templates.add(name)
        return Fetched(source=sources[0], bytes=1, seconds=0.0)


Started = tuple[FakeNodeApi, FakeFetcher, FakeTemplates]


def _node(tmp: Path, node_id: str, templates: tuple[str, ...]) -> Started:
    sandboxes = FakeSandboxes(capacity=20, templates=templates)
    fetcher, files = FakeFetcher(sandboxes), FakeTemplates()
    service = NodeService(
        identity=NodeIdentity(node_id=node_id, version=__version__, runtime="fake",
                              max_sandboxes=20, pool_sizes={}),
        sandboxes=sandboxes, sampler=FakeSamples(),
        templates=files,  # type: ignore[arg-type]
        fetcher=fetcher,  # type: ignore[arg-type]
    )  # fmt: skip
    sock = tmp / f"{node_id}.sock"
    server = uvicorn.Server(uvicorn.Config(create_node_app(service, token=TOKEN), uds=str(sock),
                                           lifespan="off", log_level="warning"))  # fmt: skip
    return FakeNodeApi(node_id, sock, sandboxes, server, _thread_server(server)), fetcher, files


def _join(api: ClusterApi, node: FakeNodeApi, templates: tuple[str, ...]) -> None:
    async def registration() -> wire.RegisterNode:
        reg = await node.registration()
        return reg.model_copy(update={"templates": list(templates)})

    async def register() -> None:
        registrar = Registrar(api_urls=[api.url], token=TOKEN, registration=registration)
        try:
            await registrar.register()
        finally:
            await registrar.aclose()

    asyncio.run(register())


def _holdings(url: str, artifact: str) -> dict[str, str]:
    async def read() -> dict[str, str]:
        store = await open_sql_store(url)
        try:
            return {h.node_id: h.state for h in await store.artifacts.holders(artifact)}
        finally:
            await store.close()

    return run_async(read)


def test_artifacts_prefer_holder_fetch_from_it_refuse_precisely_delete_everywhere(
    cluster_api: ClusterApi, tmp_path: Path, fake_nodes: Callable[..., FakeNodeApi]
) -> None:
    a, _, a_files = _node(tmp_path, "node-a", (BASE, BUSYBOX))
    b, b_fetch, b_files = _node(tmp_path, "node-b", (BASE,))
    try:
        _join(cluster_api, a, (BASE, BUSYBOX))
        _join(cluster_api, b, (BASE,))
        assert _holdings(cluster_api.database_url, BUSYBOX) == {"node-a": "held"}
        with cluster_api.member() as c, cluster_api.admin() as admin:
            # Equal nodes: the one holding busybox gets it.
            r = c.post("/v2/sandboxes", json={"templateID": "busybox"})
            assert r.status_code == 201, r.text
            assert r.json()["sandboxID"] in a.sandboxes.running

            # node-a drained, node-b cannot fetch: a precise 503, not "Template not found".
            assert admin.post("/nodes/node-a", json={"status": "draining"}).status_code == 204
            b_fetch.serves = False
            r = c.post("/v2/sandboxes", json={"templateID": "busybox"})
            assert r.status_code == 503, r.text
            assert r.json()["error_code"] == "template_artifact_unavailable"
            assert "Template 'busybox' is not available on any node" in r.json()["message"]
            assert "node node-b: refused: template" in r.json()["message"]
            assert b_fetch.asked == [(BUSYBOX, [a.address])]  # the holder, though draining

            # node-b fetches from node-a, then creates; the holding is recorded.
            b_fetch.serves = True
            r = c.post("/v2/sandboxes", json={"templateID": "busybox"})
            assert r.status_code == 201, r.text
            assert r.json()["sandboxID"] in b.sandboxes.running
            assert _holdings(cluster_api.database_url, BUSYBOX) == {
                "node-a": "held", "node-b": "held",
            }  # fmt: skip

            # This api has no builder of its own: an import runs on a ready node (node-a
            # drains, so node-b), which then holds it (ADR 0030's cluster addendum).
            b_files.release.set()
            image = {"source": "oci:/nowhere:latest", "name": "img"}
            r = c.post("/templates/from-image", json=image)
            assert r.status_code == 201, r.text
            assert r.json()["buildStatus"] == "ready"
            assert _holdings(cluster_api.database_url, r.json()["templateID"]) == {"node-b": "held"}

            # Deleted while node-b is down: node-a deletes it now, node-b is marked.
            for sid in [*a.sandboxes.running, *b.sandboxes.running]:
                assert c.delete(f"/sandboxes/{sid}").status_code == 204
            b.stop()
            assert c.delete("/templates/busybox").status_code == 204
            assert a_files.deleted == [BUSYBOX] and b_files.deleted == []
            assert _holdings(cluster_api.database_url, BUSYBOX) == {"node-b": "deleting"}
    finally:
        a.stop()
        b.stop()


def test_artifacts_a_deleting_row_is_applied_when_the_node_is_back(tmp_path: Path) -> None:
    from hutch.api.service.artifacts import ArtifactService

    async def run() -> tuple[list[str], list[tuple[str, str]], dict[str, str]]:
        store = await open_sql_store(f"sqlite+aiosqlite:///{tmp_path / 'h.db'}", migrate=True)
        try:
            service = ArtifactService(store.artifacts)
            team = await store.teams.ensure_default_team()
            for tid in ("snap-1", "base", "tpl"):
                await store.templates.create_template(
                    NewTemplate(
                        team_id=team.id,
                        alias=None,
                        id=TemplateID(tid),
                        build_state=TemplateBuildState.READY,
                    )
                )
            # A node's list names only templates the store knows (a leftover is no holding).
            await service.sync(NodeID("n3"), ["base", "leftover"], replace=True)
            assert await store.artifacts.held(NodeID("n3")) == ["base"]
            await service.sync(NodeID("n1"), ["snap-1", "base"], replace=True)
            await service.sync(NodeID("n2"), ["snap-1"], replace=True)
            # A fetched name@build stays held across a registration (nodes list no versions);
            # a template the node no longer reports goes.
            await service.record("tpl@build1", NodeID("n1"))
            await service.sync(NodeID("n1"), ["snap-1"], replace=True)
            assert await store.artifacts.held(NodeID("n1")) == ["snap-1", "tpl@build1"]
            calls: list[tuple[str, str]] = []
            down = {"n2"}

            async def delete_on(node_id: NodeID, name: str) -> None:
                if node_id in down:
                    from hutch.shared.errors import UnavailableError

                    raise UnavailableError(f"{node_id} does not answer")
                calls.append((node_id, name))

            # n1 and n2 are not registered nodes (no rows): holders, not live: marked.
            await service.delete_everywhere("snap-1", live=[NodeID("n1"), NodeID("n2")],
                                            delete_on=delete_on)  # fmt: skip
            marked = {h.node_id: h.state for h in await store.artifacts.holders("snap-1")}
            # A heartbeat that still lists it does not bring it back as held.
            await service.sync(NodeID("n2"), ["snap-1"], replace=False)
            down.clear()
            done = await service.collect(NodeID("n2"), delete_on=delete_on)
            done += await service.collect(NodeID("n1"), delete_on=delete_on)
            left = {h.node_id: h.state for h in await store.artifacts.holders("snap-1")}
            assert left == {}
            return done, calls, marked
        finally:
            await store.close()

    done, calls, marked = asyncio.run(run())
    assert marked == {"n1": "deleting", "n2": "deleting"}
    assert sorted(done) == ["snap-1", "snap-1"]
    assert sorted(calls) == [("n1", "snap-1"), ("n2", "snap-1")]


def test_artifacts_an_sdk_build_is_placed_given_its_files_and_base_and_held(
    cluster_api: ClusterApi, tmp_path: Path
) -> None:
    """The official SDK's ``Template.build`` through an api whose nodes register (nodes over
    fakes): the ``COPY`` archive is kept by the api until the build is placed, then pushed
    to the node chosen (the only ready one, which lacks the base and fetches it from its
    holder); the node's log lines reach the SDK; that node holds the template and its
    ``name@build`` version once the build is ready, and a create on the other node fetches
    it from there. The real build is ``tests/cluster/test_artifacts.py``'s."""
    from e2b import Template

    a, _, a_files = _node(tmp_path, "node-a", (BASE, BUSYBOX))
    b, b_fetch, b_files = _node(tmp_path, "node-b", (BASE,))
    try:
        _join(cluster_api, a, (BASE, BUSYBOX))
        _join(cluster_api, b, (BASE,))
        ctx = tmp_path / "ctx"
        ctx.mkdir()
        (ctx / "hello.txt").write_text("hello through the store\n")
        template = (
            Template(file_context_path=str(ctx))
            .from_template("busybox")
            .copy("hello.txt", "/home/user/")
            .run_cmd("true")
        )
        b_files.build_release.set()
        with cluster_api.admin() as admin, cluster_api.member() as c:
            assert admin.post("/nodes/node-a", json={"status": "draining"}).status_code == 204
            logs: list[str] = []
            info = Template.build(template, "sdktpl", api_url=cluster_api.url,
                                  api_key=cluster_api.key,
                                  on_build_logs=lambda e: logs.append(e.message))  # fmt: skip
            assert "building on node node-b" in logs and "step 0 started" in logs, logs
            assert [name for name, _ in b_files.builds] == ["sdktpl"] and a_files.builds == []
            (archive,) = b_files.files.values()  # the SDK's tar of hello.txt, via the store
            with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
                member = tar.extractfile("hello.txt")
                assert member is not None and member.read() == b"hello through the store\n"
            assert a_files.files == {}
            assert b_fetch.asked == [(BUSYBOX, [a.address])]  # the base, from its holder
            version = f"sdktpl@{info.build_id}"
            assert _holdings(cluster_api.database_url, "sdktpl") == {"node-b": "held"}
            assert _holdings(cluster_api.database_url, version) == {"node-b": "held"}

            assert admin.post("/nodes/node-a", json={"status": "ready"}).status_code == 204
            assert admin.post("/nodes/node-b", json={"status": "draining"}).status_code == 204
            r = c.post("/v2/sandboxes", json={"templateID": "sdktpl"})
            assert r.status_code == 201, r.text
            assert r.json()["sandboxID"] in a.sandboxes.running
    finally:
        a.stop()
        b.stop()
