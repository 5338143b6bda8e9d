"""The official SDK's ``Template.build`` against the retention sweep of the api's build
archives (ADR 0037): the elected leader's singleton deletes an archive unused for the
retention; the SDK's next build of the same files is told it is absent, uploads it again
and builds. Real api (SQLite and PostgreSQL), nodes over fakes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from hutch.api.store.base import utc_now
from hutch.api.store.sql import open_sql_store
from hutch.api.store.tables import build_files
from tests.integration.cluster.conftest import ClusterApi, run_async, serve_api, wait_for
from tests.integration.cluster.test_artifacts import BASE, BUSYBOX, _join, _node


@pytest.fixture
def sweeping_api(database_url: str, tmp_path: Path) -> Iterator[ClusterApi]:
    yield from serve_api(
        database_url, tmp_path, build_files_retention_s=3600, build_files_sweep_interval_s=0.2
    )


def _archives(url: str, *, backdate_hours: float = 0) -> list[str]:
    async def run() -> list[str]:
        store = await open_sql_store(url)
        try:
            async with store.engine.begin() as conn:
                if backdate_hours:
                    old = utc_now() - timedelta(hours=backdate_hours)
                    await conn.execute(update(build_files).values(used_at=old))
                rows = await conn.execute(select(build_files.c.files_hash))
                return sorted(r.files_hash for r in rows)
        finally:
            await store.close()

    return run_async(run)


def test_a_swept_archive_is_uploaded_again_by_the_sdks_next_build(
    sweeping_api: ClusterApi, tmp_path: Path
) -> None:
    from e2b import Template

    api = sweeping_api
    a, _, a_files = _node(tmp_path, "node-a", (BASE, BUSYBOX))
    try:
        _join(api, a, (BASE, BUSYBOX))
        a_files.build_release.set()
        ctx = tmp_path / "ctx"
        ctx.mkdir()
        (ctx / "hello.txt").write_text("kept while used\n")
        template = (
            Template(file_context_path=str(ctx)).from_template("busybox").copy("hello.txt", "/")
        )
        Template.build(template, "swept", api_url=api.url, api_key=api.key)
        (files_hash,) = _archives(api.database_url)
        assert list(a_files.files) == [files_hash]

        # Just used: the leader's sweeps (every 0.2 s) keep it; two hours unused: gone.
        assert _archives(api.database_url) == [files_hash]
        _archives(api.database_url, backdate_hours=2)
        wait_for(lambda: _archives(api.database_url) == [], what="the sweep")

        a_files.files.clear()  # as if the node's own copy had aged out too
        info = Template.build(template, "swept", api_url=api.url, api_key=api.key)
        assert info.build_id
        assert _archives(api.database_url) == [files_hash]  # the SDK uploaded it again
        assert list(a_files.files) == [files_hash]  # and the build got it
    finally:
        a.stop()
