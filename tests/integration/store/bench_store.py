"""Store latency on SQLite and PostgreSQL (numbers for docs/store.md).

Run: ``.venv/bin/python -m tests.integration.store.bench_store`` (as root or a user that
can run initdb; or set HUTCH_TEST_POSTGRES_DSN). Starts the same private cluster as the
tests, prints a table, and removes everything it made.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from sqlalchemy import text

from hutch.api.store.engine import create_engine
from hutch.api.store.migrations import upgrade_to_head
from hutch.api.store.sql import SqlStore

from .conftest import _PrivateCluster
from .factories import new_sandbox

N = 200


async def _timed(n: int, op: Callable[[int], Awaitable[object]]) -> list[float]:
    samples = []
    for i in range(n):
        t = time.perf_counter()
        await op(i)
        samples.append((time.perf_counter() - t) * 1000)
    return samples


def _fmt(samples: list[float]) -> str:
    q = statistics.quantiles(samples, n=20)
    return f"{statistics.median(samples):6.2f} ms (p95 {q[18]:6.2f})"


async def bench(url: str) -> dict[str, str]:
    await upgrade_to_head(url)
    engine = create_engine(url, pool_size=25)
    store = SqlStore.on(engine)
    results: dict[str, str] = {}
    try:
        team = await store.teams.create_team(name="bench")

        async def create_get(i: int) -> None:
            spec = new_sandbox(team.id, metadata={"user": f"u{i % 10}", "run": str(i)})
            created = await store.sandboxes.create_sandbox(spec, idempotency_key=f"k{i}")
            await store.sandboxes.get_sandbox(created.sandbox.id, team_id=team.id)

        results["create + get"] = _fmt(await _timed(N, create_get))
        page = await store.sandboxes.list_sandboxes(team_id=team.id, limit=1)
        sbx_id = page.items[0].id

        async def get(_: int) -> None:
            await store.sandboxes.get_sandbox(sbx_id, team_id=team.id)

        results["get"] = _fmt(await _timed(N, get))

        async def list_page(_: int) -> None:
            await store.sandboxes.list_sandboxes(team_id=team.id, limit=100)

        results["list 100 of 200"] = _fmt(await _timed(N, list_page))

        async def list_filtered(_: int) -> None:
            await store.sandboxes.list_sandboxes(team_id=team.id, metadata={"user": "u3"})

        results["list, metadata filter"] = _fmt(await _timed(N, list_filtered))

        async def patch(i: int) -> None:
            await store.sandboxes.patch_metadata(sbx_id, {f"k{i}": "v"}, team_id=team.id)

        results["patch_metadata"] = _fmt(await _timed(N, patch))

        async def concurrent_patches(round_: int) -> None:
            await asyncio.gather(
                *(
                    store.sandboxes.patch_metadata(sbx_id, {f"c{round_}-{j}": "v"}, team_id=team.id)
                    for j in range(20)
                )
            )

        samples = await _timed(20, concurrent_patches)
        results["20 concurrent patches (batch)"] = _fmt(samples)

        async def auth(_: int) -> None:
            await store.keys.get_team_by_api_key(key.secret)

        key = await store.keys.create_api_key(team.id)
        results["get_team_by_api_key"] = _fmt(await _timed(N, auth))
    finally:
        await engine.dispose()
    return results


async def _create_db(server_url: str, name: str) -> str:
    engine = create_engine(server_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await engine.dispose()
    return server_url.replace("/postgres?", f"/{name}?", 1)


async def main() -> None:
    """Print the table."""
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = await bench(f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}")
    dsn = os.environ.get("HUTCH_TEST_POSTGRES_DSN")
    cluster = None if dsn else _PrivateCluster()
    try:
        server = dsn or cluster.start()  # type: ignore[union-attr]
        pg = await bench(await _create_db(server, "hutch_bench") if cluster else server)
    finally:
        if cluster is not None:
            cluster.stop()
    print(f"{'operation (median of ' + str(N) + ')':32} {'SQLite':>26} {'PostgreSQL':>26}")
    for op in sqlite:
        print(f"{op:32} {sqlite[op]:>26} {pg[op]:>26}")


if __name__ == "__main__":
    asyncio.run(main())
