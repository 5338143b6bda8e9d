"""Template imports as jobs in the store (ADR 0030), on the real PostgreSQL: an import
queued through one api is claimed once (SKIP LOCKED) by another api's worker woken by
NOTIFY, its progress is read from the row by any api, a worker that dies is taken over
once its lease ends and the template is written exactly once, an import whose workers keep
dying is failed with the reason, and a stopping api gives its imports back at once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest
from sqlalchemy import func, select

from hutch.api.models import NewTemplate, TemplateBuildState
from hutch.api.service.import_jobs import ImportWorker
from hutch.api.service.ports import ImageImport, ImportedImage, ImportProgress
from hutch.api.service.template_imports import ImportPolicy, TemplateImportService
from hutch.api.store.builds import build_listener
from hutch.api.store.imports import IMPORTS_CHANNEL
from hutch.api.store.sql import SqlStore, open_sql_store
from hutch.api.store.tables import artifact_holdings, template_imports, templates
from hutch.shared.errors import AlreadyExistsError, ImageError
from hutch.shared.ids import NodeID, TeamID


class GatedBuilder:
    """A node's importer: reports a stage, then waits for ``gate``; ``bad`` sources fail."""

    def __init__(self, node_id: str | None = None) -> None:
        #: The node it says imported (a cluster api's ``ClusterTemplates`` names one).
        self.node_id = NodeID(node_id) if node_id else None
        self.gate = asyncio.Event()
        self.started = asyncio.Event()
        self.runs: list[str] = []
        self.deleted: list[str] = []

    async def import_image(
        self, request: ImageImport, *, progress: ImportProgress | None = None
    ) -> ImportedImage:
        self.runs.append(request.name)
        if progress is not None:
            progress("layer 1/1", 3, 10)
        self.started.set()
        await self.gate.wait()
        if request.source == "bad":
            raise ImageError("bad: not an image", public_message="bad: not an image")
        if progress is not None:
            progress("layer 1/1", 10, 10)
            progress("seal", 1, 1)
        return ImportedImage(name=request.name, fingerprint="f" * 64, cache_hit=False,
                             envd_injected=False, envd_sha256=None,
                             node_id=self.node_id)  # fmt: skip

    async def delete(self, name: str) -> None:
        self.deleted.append(name)


FAST = ImportPolicy(lease_s=1.0, max_attempts=3, heartbeat_s=0.1, follow_s=0.05)


@pytest.fixture(autouse=True)
async def _no_imports_of_other_tests(pg_url: str) -> None:
    store = await open_sql_store(pg_url)
    try:
        async with store.engine.begin() as conn:
            await conn.execute(template_imports.delete())
            await conn.execute(templates.delete().where(templates.c.alias.like("imp%")))
            await conn.execute(
                artifact_holdings.delete().where(artifact_holdings.c.artifact.like("imp%"))
            )
    finally:
        await store.close()


def _service(
    store: SqlStore, builder: GatedBuilder, policy: ImportPolicy = FAST
) -> TemplateImportService:
    return TemplateImportService(
        templates=store.templates, jobs=store.imports, builder=builder, policy=policy
    )


@contextlib.asynccontextmanager
async def _running(worker: ImportWorker) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(worker.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _until(predicate, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.02)


async def _team(store: SqlStore) -> TeamID:
    return (await store.teams.ensure_default_team()).id


async def _template_rows(store: SqlStore, name: str) -> int:
    async with store.engine.connect() as conn:
        return int(
            (
                await conn.execute(
                    select(func.count()).select_from(templates).where(templates.c.alias == name)
                )
            ).scalar_one()
        )


async def test_notify_wakes_another_apis_worker_and_any_api_follows_progress(
    pg_url: str,
) -> None:
    a, b = await open_sql_store(pg_url), await open_sql_store(pg_url)
    builder = GatedBuilder()
    front = _service(a, GatedBuilder())  # api A takes the request (it could import too)
    back = _service(b, builder)  # api B imports; its poll is an hour: only NOTIFY wakes it
    listen = build_listener(b.engine, channel=IMPORTS_CHANNEL)
    assert listen is not None
    listening = asyncio.Event()

    @contextlib.asynccontextmanager
    async def listen_and_tell(callback: Callable[[], None]) -> AsyncIterator[None]:
        async with listen(callback):  # LISTEN has run when this is entered
            listening.set()
            yield

    worker = ImportWorker(back, listen=listen_and_tell, poll_s=3600)
    try:
        async with _running(worker):
            # A NOTIFY before B's LISTEN would never wake it (the poll is an hour away).
            await asyncio.wait_for(listening.wait(), 60)
            team = await _team(a)
            record = await front.submit(ImageImport(source="oci:x", name="impnotified"),
                                        team_id=team)  # fmt: skip
            assert record.status == "queued"
            # The same name again, through either api, while it runs: 409 at once.
            with pytest.raises(AlreadyExistsError, match="being imported"):
                await back.submit(ImageImport(source="oci:x", name="impnotified"), team_id=team)
            await asyncio.wait_for(builder.started.wait(), 60)

            async def progressed() -> bool:
                got = await front.get(record.import_id, team_id=team)
                return got.progress.get("layer 1/1") == (3, 10)

            await _until(progressed)  # A reads the progress B's worker wrote
            seen = await front.get(record.import_id, team_id=team)
            assert seen.status == "running" and seen.worker == worker.worker_id
            builder.gate.set()
            states = [r async for r in front.follow(record.import_id, team_id=team)]
            done = states[-1]
            assert done.status == "ready", done
            assert done.progress == {"layer 1/1": (10, 10), "seal": (1, 1)}
            assert done.result["fingerprint"] == "f" * 64
            template = await front.template_of(done)
            assert template is not None and template.build_state is TemplateBuildState.READY
            assert builder.runs == ["impnotified"] and done.attempts == 1
    finally:
        await a.close()
        await b.close()


async def test_concurrent_claims_of_several_apis_take_each_import_once(pg_url: str) -> None:
    stores = [await open_sql_store(pg_url) for _ in range(4)]
    try:
        service = _service(stores[0], GatedBuilder())
        team = await _team(stores[0])
        ids = {(await service.submit(ImageImport(source="oci:x", name=f"impclaim{i}"),
                                     team_id=team)).import_id for i in range(6)}  # fmt: skip

        async def claim_all(store: SqlStore, worker: str) -> list[str]:
            got: list[str] = []
            while True:
                record, _failed = await store.imports.claim(worker, lease_s=60, max_attempts=3)
                if record is None:
                    return got
                got.append(record.import_id)

        claims = await asyncio.gather(*(claim_all(s, f"w{i}") for i, s in enumerate(stores)))
        flat = [c for per in claims for c in per]
        assert sorted(flat) == sorted(ids)  # every import once, none twice
    finally:
        for store in stores:
            await store.close()


async def test_a_dead_workers_import_is_taken_over_after_its_lease_and_written_once(
    pg_url: str,
) -> None:
    a, b = await open_sql_store(pg_url), await open_sql_store(pg_url)
    try:
        team = await _team(a)
        service_a = _service(a, GatedBuilder())
        record = await service_a.submit(ImageImport(source="oci:x", name="impdead"), team_id=team)
        # api A's worker claims it and dies at once (SIGKILL: no heartbeat, no release).
        dead, _ = await a.imports.claim("api-dead", lease_s=FAST.lease_s, max_attempts=3)
        assert dead is not None and dead.import_id == record.import_id
        builder = GatedBuilder(node_id="node-imp")  # a cluster api's: it names the node
        builder.gate.set()
        worker = ImportWorker(_service(b, builder), poll_s=0.05)
        async with _running(worker):
            states = [r async for r in service_a.follow(record.import_id, team_id=team)]
        done = states[-1]
        assert done.status == "ready" and done.attempts == 2 and done.worker == worker.worker_id
        assert builder.runs == ["impdead"]
        # The dead worker wakes up and tries to publish: its lease is gone, nothing is written.
        late = await a.imports.finish_ready(
            record.import_id, "api-dead", result={},
            template=NewTemplate(team_id=team, alias="impdead"), progress={},
            holder=NodeID("node-dead"),
        )  # fmt: skip
        assert late is None
        assert not await a.imports.heartbeat(record.import_id, "api-dead", lease_s=60)
        assert await _template_rows(a, "impdead") == 1
        # The importing node is the holder, written with the template's row; the late
        # worker's node is not (its transaction wrote nothing).
        assert {h.node_id: h.state for h in await a.artifacts.holders("impdead")} == {
            "node-imp": "held"
        }
    finally:
        await a.close()
        await b.close()


async def test_a_live_workers_lease_is_never_taken_over(pg_url: str) -> None:
    a, b = await open_sql_store(pg_url), await open_sql_store(pg_url)
    first, second = GatedBuilder(), GatedBuilder()
    # A lease far above the heartbeat: a loaded machine's stall must not look like a death.
    policy = ImportPolicy(lease_s=3.0, heartbeat_s=0.1, follow_s=0.05)
    one = ImportWorker(_service(a, first, policy), poll_s=0.05)
    other = ImportWorker(_service(b, second, policy), poll_s=0.05)
    try:
        team = await _team(a)
        async with _running(one):
            record = await _service(a, first).submit(ImageImport(source="oci:x", name="implive"),
                                                     team_id=team)  # fmt: skip
            await asyncio.wait_for(first.started.wait(), 60)
            async with _running(other):
                # Two leases long: the heartbeat renews it, the other worker polls in vain.
                await asyncio.sleep(2 * policy.lease_s)
                held = await a.imports.find(record.import_id)
                assert held.status == "running" and held.worker == one.worker_id
                assert held.attempts == 1 and second.runs == []
                first.gate.set()
                await _until(lambda: _finished(a, record.import_id))
        assert (await a.imports.find(record.import_id)).status == "ready"
        assert first.runs == ["implive"] and second.runs == []
    finally:
        await a.close()
        await b.close()


async def _finished(store: SqlStore, import_id: str) -> bool:
    found = await store.imports.find(import_id)
    return found is not None and found.finished


async def test_an_import_whose_workers_keep_dying_is_failed_with_the_reason(
    pg_url: str,
) -> None:
    store = await open_sql_store(pg_url)
    try:
        team = await _team(store)
        service = _service(store, GatedBuilder(), ImportPolicy(lease_s=0.2, max_attempts=2))
        record = await service.submit(ImageImport(source="oci:x", name="impcursed"), team_id=team)
        for dead in ("api-dead1", "api-dead2"):
            await _until(lambda w=dead: _claimed(store, w))  # type: ignore[misc]
        got, failed = None, []
        while not failed:  # the third claim finds it claimed twice: failed, not run
            await asyncio.sleep(0.05)
            got, failed = await store.imports.claim("api-third", lease_s=0.2, max_attempts=2)
        assert got is None and [f.import_id for f in failed] == [record.import_id]
        done = await service.get(record.import_id, team_id=team)
        assert done.status == "error" and done.error_status == 503
        assert "started 2 times" in done.error_message and "api-dead2" in done.error_message
        assert "start the import again" in done.error_message
        # The name is free again: a new import of it may be queued.
        again = await service.submit(ImageImport(source="oci:x", name="impcursed"), team_id=team)
        assert again.status == "queued"
    finally:
        await store.close()


async def _claimed(store: SqlStore, worker: str) -> bool:
    record, _ = await store.imports.claim(worker, lease_s=0.2, max_attempts=2)
    return record is not None


async def test_a_bad_image_ends_in_its_error_and_a_stopping_api_gives_its_import_back(
    pg_url: str,
) -> None:
    a, b = await open_sql_store(pg_url), await open_sql_store(pg_url)
    try:
        team = await _team(a)
        stopping = GatedBuilder()
        worker_a = ImportWorker(_service(a, stopping), poll_s=0.05)
        service = _service(a, stopping)
        async with _running(worker_a):
            record = await service.submit(ImageImport(source="bad", name="impstop"), team_id=team)
            await asyncio.wait_for(stopping.started.wait(), 60)
        # api A stopped mid-import: the job is queued again at once, not after the lease.
        back = await a.imports.find(record.import_id)
        assert back.status == "queued" and back.worker is None
        builder = GatedBuilder()
        builder.gate.set()
        async with _running(ImportWorker(_service(b, builder), poll_s=0.05)):
            states = [r async for r in service.follow(record.import_id, team_id=team)]
        done = states[-1]
        assert done.status == "error" and done.error_status == 400
        assert done.error_message == "bad: not an image" and done.attempts == 2
        assert await _template_rows(a, "impstop") == 0
    finally:
        await a.close()
        await b.close()
