"""Template builds as jobs in the store (ADR 0024), on the real PostgreSQL (and SQLite for
the restart of the one api): any api answers a build's status and logs, a started build is
claimed once (SKIP LOCKED), NOTIFY wakes another api's worker, and a build whose api died
or stopped is failed with the reason, never lost and never run twice."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import timedelta
from pathlib import Path

import pytest

from hutch.api.models import TemplateBuildState
from hutch.api.service.ports import BuildLogger
from hutch.api.service.template_builds import TemplateBuildService
from hutch.api.service.template_jobs import BuildWorker
from hutch.api.store.base import utc_now
from hutch.api.store.builds import build_listener
from hutch.api.store.migrations import upgrade_to_head
from hutch.api.store.sql import SqlStore, open_sql_store
from hutch.api.store.tables import (
    artifact_holdings,
    build_file_chunks,
    build_files,
    template_builds,
)
from hutch.shared.errors import InvalidArgumentError
from hutch.shared.ids import NodeID


class GatedRunner:
    """A build runner whose builds log a line, then wait for ``gate``."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.runs: list[str] = []
        self.started = asyncio.Event()

    async def has_files(self, files_hash: str) -> bool:
        return False

    async def store_files(self, files_hash: str, chunks: AsyncIterator[bytes]) -> None:
        pass

    async def run_build(
        self, name: str, start: Mapping[str, object], *, cpu_count: float, memory_mb: int,
        log: BuildLogger, build_id: str,
    ) -> None:  # fmt: skip
        self.runs.append(build_id)
        log("info", f"step 1 of {name}", "0")
        self.started.set()
        await self.gate.wait()
        log("info", "step 2", "1")


@pytest.fixture(autouse=True)
async def _no_builds_of_other_tests(pg_url: str) -> None:
    store = await open_sql_store(pg_url)
    try:
        async with store.engine.begin() as conn:
            await conn.execute(template_builds.delete())
    finally:
        await store.close()


def _service(store: SqlStore, runner: GatedRunner | None) -> TemplateBuildService:
    return TemplateBuildService(templates=store.templates, runner=runner, jobs=store.builds)


async def _until(predicate, timeout: float = 15) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.02)


async def _started_build(service: TemplateBuildService, store: SqlStore, name: str) -> str:
    team = await store.teams.ensure_default_team()
    template, build, _ = await service.request_build(
        team_id=team.id, name=name, cpu_count=1, memory_mb=256
    )
    await service.start_build(template.id, build.build_id, {"steps": []}, team_id=team.id)
    return build.build_id


@contextlib.asynccontextmanager
async def _running(worker: BuildWorker) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(worker.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_notify_wakes_another_apis_worker_and_any_api_answers_status_and_logs(
    pg_url: str,
) -> None:
    a, b = await open_sql_store(pg_url), await open_sql_store(pg_url)
    runner = GatedRunner()
    front = _service(a, GatedRunner())  # api A takes the requests (it could build too)
    back = _service(b, runner)  # api B builds; its poll is an hour: only NOTIFY wakes it
    listen = build_listener(b.engine)
    assert listen is not None
    listening = asyncio.Event()

    @contextlib.asynccontextmanager
    async def listen_and_tell(callback: Callable[[], None]) -> AsyncIterator[None]:
        async with listen(callback):  # LISTEN has run when this is entered
            listening.set()
            yield

    worker = BuildWorker(back, listen=listen_and_tell, poll_s=3600)
    try:
        async with _running(worker):
            # A NOTIFY before B's LISTEN would never wake it (the poll is an hour away).
            await asyncio.wait_for(listening.wait(), 60)
            build_id = await _started_build(front, a, "notified")
            await asyncio.wait_for(runner.started.wait(), 15)
            team = await a.teams.ensure_default_team()

            async def logged() -> bool:
                got = await front.get_build("notified", build_id, team_id=team.id)
                return any("step 1" in e.message for e in got.entries)

            await _until(logged)  # A answers with the lines B's worker wrote
            seen = await front.get_build("notified", build_id, team_id=team.id)
            assert seen.status == "building"
            runner.gate.set()

            async def ready() -> bool:
                got = await front.get_build("notified", build_id, team_id=team.id)
                return got.status == "ready"

            await _until(ready)
            done = await front.get_build("notified", build_id, team_id=team.id)
            assert [e.message for e in done.entries][-2:] == [
                "step 2",
                "Build finished (tags: default)",
            ]
            template = await a.templates.get_template("notified", team_id=team.id)
            assert template.build_state is TemplateBuildState.READY
            assert runner.runs == [build_id]
    finally:
        await a.close()
        await b.close()


async def test_concurrent_claims_of_several_apis_take_each_build_once(pg_url: str) -> None:
    stores = [await open_sql_store(pg_url) for _ in range(4)]
    try:
        service = _service(stores[0], GatedRunner())
        ids = {await _started_build(service, stores[0], f"claimed{i}") for i in range(6)}

        async def claim_all(store: SqlStore, worker: str) -> list[str]:
            got: list[str] = []
            while (record := await store.builds.claim(worker)) is not None:
                got.append(record.build_id)
            return got

        claims = await asyncio.gather(*(claim_all(s, f"w{i}") for i, s in enumerate(stores)))
        flat = [c for per in claims for c in per]
        assert sorted(flat) == sorted(ids)  # every build once, none twice
    finally:
        for store in stores:
            await store.close()


async def test_a_build_whose_api_died_is_failed_with_the_reason(pg_url: str) -> None:
    a, b = await open_sql_store(pg_url), await open_sql_store(pg_url)
    try:
        front = _service(a, GatedRunner())
        build_id = await _started_build(front, a, "orphaned")
        dead = await a.builds.claim("api-dead0000")  # claimed, then its api was SIGKILLed
        assert dead is not None and dead.build_id == build_id
        runner = GatedRunner()
        later = BuildWorker(
            _service(b, runner), clock=lambda: utc_now() + timedelta(seconds=60)
        )  # past the orphan timeout
        assert await later.fail_orphans() == 1
        team = await a.teams.ensure_default_team()
        got = await front.get_build("orphaned", build_id, team_id=team.id)
        assert got.status == "error"
        assert got.reason is not None and "api-dead0000" in got.reason
        assert "start the build again" in got.reason
        assert got.entries[-1].level == "error"
        template = await a.templates.get_template("orphaned", team_id=team.id)
        assert template.build_state is TemplateBuildState.ERROR  # a first build
        assert runner.runs == []  # never run a second time
        assert await later.fail_orphans() == 0
    finally:
        await a.close()
        await b.close()


async def test_a_stopped_api_fails_its_running_build_at_once(pg_url: str) -> None:
    store = await open_sql_store(pg_url)
    runner = GatedRunner()
    service = _service(store, runner)
    worker = BuildWorker(service, poll_s=3600)
    service.on_started = worker.wake
    try:
        async with _running(worker):
            build_id = await _started_build(service, store, "stopped")
            await asyncio.wait_for(runner.started.wait(), 15)
        team = await store.teams.ensure_default_team()
        got = await service.get_build("stopped", build_id, team_id=team.id)
        assert got.status == "error" and got.reason is not None
        assert "was stopped" in got.reason
    finally:
        await store.close()


async def test_sqlite_restart_of_the_one_api_fails_what_it_was_building(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'hutch.db'}"
    await upgrade_to_head(url)
    store = await open_sql_store(url)
    try:
        service = _service(store, GatedRunner())
        build_id = await _started_build(service, store, "restarted")
        assert await store.builds.claim("api-before") is not None  # then: SIGKILL
        # The next start (SQLite: the only api) fails every old claim at once.
        fresh = BuildWorker(_service(store, GatedRunner()), orphans_at_start=True, poll_s=3600)
        async with _running(fresh):

            async def failed() -> bool:
                record = await store.builds.get_build(build_id)
                return record.status == "error"

            await _until(failed)
        record = await store.builds.get_build(build_id)
        assert record.reason is not None and "api-before" in record.reason
    finally:
        await store.close()


class PlacingRunner(GatedRunner):
    """A cluster's runner: the build ran on ``node-b`` (``ClusterBuilds`` answers it)."""

    async def run_build(  # type: ignore[override]
        self, name: str, start: Mapping[str, object], *, cpu_count: float, memory_mb: int,
        log: BuildLogger, build_id: str,
    ) -> NodeID:  # fmt: skip
        self.runs.append(build_id)
        return NodeID("node-b")


async def test_a_cluster_build_records_its_node_as_holder_with_ready(pg_url: str) -> None:
    store = await open_sql_store(pg_url)
    try:
        service = _service(store, PlacingRunner())
        build_id = await _started_build(service, store, "placed")
        record = await store.builds.claim("w1")
        assert record is not None and record.build_id == build_id
        await service.execute(record, worker="w1")
        done = await store.builds.find_build(build_id)
        assert done is not None and done.status == "ready"
        # The template and its name@build version, held by the node that built them.
        for artifact in ("placed", f"placed@{build_id}"):
            assert [(h.node_id, h.state) for h in await store.artifacts.holders(artifact)] == [
                ("node-b", "held")
            ]
        # A finish that is not the worker's (it ended meanwhile) writes no holder.
        assert not await store.builds.finish(
            build_id, status="ready", worker="w1", holder=NodeID("node-c"), artifacts=["placed"]
        )
        assert {h.node_id for h in await store.artifacts.holders("placed")} == {"node-b"}
    finally:
        async with store.engine.begin() as conn:
            await conn.execute(artifact_holdings.delete())
        await store.close()


async def test_build_archives_are_kept_whole_in_chunks_and_read_back(pg_url: str) -> None:
    store = await open_sql_store(pg_url)
    data = bytes(range(256)) * (4096 * 9 + 7)  # ~9 MiB: three stored chunks

    async def upload(size: int = 100_003) -> AsyncIterator[bytes]:
        for i in range(0, len(data), size):
            yield data[i : i + size]

    try:
        assert not await store.build_files.has("a" * 64)
        assert await store.build_files.put("a" * 64, upload()) == len(data)
        assert await store.build_files.has("a" * 64)
        assert await store.build_files.put("a" * 64, upload(7_777)) == len(data)  # idempotent
        got = [c async for c in store.build_files.read("a" * 64)]
        assert len(got) == 3 and b"".join(got) == data
        with pytest.raises(InvalidArgumentError, match="larger than"):
            await store.build_files.put("b" * 64, upload(), max_bytes=1000)
        assert not await store.build_files.has("b" * 64)
    finally:
        async with store.engine.begin() as conn:
            await conn.execute(build_file_chunks.delete())
            await conn.execute(build_files.delete())
        await store.close()
