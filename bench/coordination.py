"""The cost of coordination across api processes on PostgreSQL (ADR 0024).

Run from the repository (as root or not; a private PostgreSQL cluster is started in a
temporary directory on a unix socket, as the store tests do, or ``--database-url``):

    .venv/bin/python bench/coordination.py [--n 500]

Measures, each ``--n`` times (median and p95):

* a sandbox lock held and released with nobody else (``PgSandboxLocks.hold``: a pooled
  connection, ``SET lock_timeout``, ``pg_advisory_lock``, ``pg_advisory_unlock``), and the
  in-process family SQLite uses, for scale;
* the hand-over: how long after one api releases a sandbox another api that waited for it
  is inside (two families, two engines);
* template build claim latency: from ``start_build``'s commit on one api to another api's
  worker running it, woken by NOTIFY (poll an hour) and by its poll alone (1 s, no LISTEN);
* leader take-over after the leader's session is terminated, at ``interval_s`` 0.1 and 2 s
  (fewer rounds: each takes up to one interval).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from _table import print_table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from sqlalchemy import text  # noqa: E402

from hutch.api.service.locks import SandboxLocks  # noqa: E402
from hutch.api.store.engine import create_engine  # noqa: E402
from hutch.api.store.leader import PgLeaderElector  # noqa: E402
from hutch.api.store.locks import PgSandboxLocks  # noqa: E402
from hutch.api.store.migrations import upgrade_to_head  # noqa: E402


def _ms(samples: list[float]) -> tuple[str, str]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return f"{statistics.median(ordered) * 1000:.2f} ms", f"{p95 * 1000:.2f} ms"


async def _timed(n: int, one: Callable[[], Awaitable[float | None]]) -> list[float]:
    out: list[float] = []
    for _ in range(n):
        start = time.perf_counter()
        measured = await one()
        out.append(measured if measured is not None else time.perf_counter() - start)
    return out


async def bench_locks(url: str, n: int) -> list[list[str]]:
    engines = [create_engine(url, pool_size=2) for _ in range(2)]
    a, b = (PgSandboxLocks(e, wait_s=10) for e in engines)
    local = SandboxLocks()
    rows: list[list[str]] = []

    async def hold_pg() -> None:
        async with a.hold("sbxbench"):
            pass

    async def hold_local() -> None:
        async with local.hold("sbxbench"):
            pass

    await _timed(20, hold_pg)  # warm the pool
    rows.append(["sandbox lock, uncontended (PostgreSQL)", *_ms(await _timed(n, hold_pg))])
    rows.append(["sandbox lock, uncontended (in-process)", *_ms(await _timed(n, hold_local))])

    async def handover() -> float:
        inside = asyncio.Event()
        entered: list[float] = []

        async def waiter() -> None:
            async with b.hold("sbxhand"):
                entered.append(time.perf_counter())

        async with a.hold("sbxhand"):
            task = asyncio.create_task(waiter())
            await asyncio.sleep(0.005)  # let b reach pg_advisory_lock
            inside.set()
            released = time.perf_counter()
        await task
        return entered[0] - released

    rows.append(["hand-over to a waiting api", *_ms(await _timed(min(n, 200), handover))])
    await a.aclose()
    await b.aclose()
    for engine in engines:
        await engine.dispose()
    return rows


async def bench_leader(url: str, interval_s: float, rounds: int) -> list[str]:
    admin = create_engine(url, pool_size=1)
    engines = [create_engine(url, pool_size=1) for _ in range(2)]
    electors = [PgLeaderElector(e, interval_s=interval_s) for e in engines]
    tasks = [asyncio.create_task(e.run()) for e in electors]
    samples: list[float] = []
    for _ in range(rounds):
        while not any(e.is_leader for e in electors):
            await asyncio.sleep(0.001)
        leader = next(e for e in electors if e.is_leader)
        other = next(e for e in electors if e is not leader)
        async with admin.connect() as conn:
            pid = (
                await conn.execute(
                    text("SELECT pid FROM pg_locks WHERE locktype='advisory' AND granted")
                )
            ).scalar_one()
            start = time.perf_counter()
            await conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
            await conn.commit()
        while not other.is_leader:
            await asyncio.sleep(0.001)
        samples.append(time.perf_counter() - start)
        while leader.is_leader:  # the old leader has noticed and stepped down
            await asyncio.sleep(0.001)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for elector in electors:
        await elector.aclose()
    for engine in [*engines, admin]:
        await engine.dispose()
    return [f"leader take-over, interval {interval_s:g} s ({rounds} rounds)", *_ms(samples)]


async def bench_claims(url: str, *, notify: bool, rounds: int) -> list[str]:
    from hutch.api.service.template_builds import TemplateBuildService
    from hutch.api.service.template_jobs import BuildWorker
    from hutch.api.store.builds import build_listener
    from hutch.api.store.sql import open_sql_store

    started: dict[str, float] = {}
    claimed: dict[str, float] = {}

    class Runner:
        async def has_files(self, files_hash: str) -> bool:
            return False

        async def store_files(self, files_hash: str, chunks: object) -> None:
            pass

        async def run_build(self, name: str, start: object, **kw: object) -> None:
            claimed[str(kw["build_id"])] = time.perf_counter()

    a, b = await open_sql_store(url), await open_sql_store(url)
    front = TemplateBuildService(templates=a.templates, runner=Runner(), jobs=a.builds)
    back = TemplateBuildService(templates=b.templates, runner=Runner(), jobs=b.builds)
    worker = BuildWorker(
        back, listen=build_listener(b.engine) if notify else None, poll_s=3600 if notify else 1.0
    )
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.3)
    team = await a.teams.ensure_default_team()
    for i in range(rounds):
        name = f"bench{'n' if notify else 'p'}{i}"
        template, build, _ = await front.request_build(
            team_id=team.id, name=name, cpu_count=1, memory_mb=256
        )
        started[build.build_id] = time.perf_counter()
        await front.start_build(template.id, build.build_id, {}, team_id=team.id)
        while build.build_id not in claimed:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.137 * (i % 7))  # spread starts over the poll's phase
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await a.close()
    await b.close()
    samples = [claimed[k] - started[k] for k in started]
    how = "NOTIFY (poll 1 h)" if notify else "poll every 1 s, no LISTEN"
    return [f"build claim by another api, {how} ({rounds} builds)", *_ms(samples)]


async def main(url: str, n: int) -> None:
    await upgrade_to_head(url)
    rows = await bench_locks(url, n)
    rows.append(await bench_claims(url, notify=True, rounds=50))
    rows.append(await bench_claims(url, notify=False, rounds=20))
    rows.append(await bench_leader(url, 0.1, 20))
    rows.append(await bench_leader(url, 2.0, 5))
    print_table("Coordination on PostgreSQL (unix socket)", rows, ["what", "median", "p95"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    if args.database_url:
        asyncio.run(main(args.database_url, args.n))
    else:
        from tests.integration.store.conftest import PostgresDatabases, _PrivateCluster

        tempfile.tempdir = tempfile.gettempdir()
        cluster = _PrivateCluster()
        try:
            dbs = PostgresDatabases(cluster.start())
            asyncio.run(main(dbs.create(), args.n))
        finally:
            cluster.stop()
