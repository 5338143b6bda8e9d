"""Placement's cost in the create transaction on PostgreSQL (ADR 0025).

    .venv/bin/python bench/placement.py --database-url postgresql+asyncpg://... [--n 300]

On an empty database of its own (it is migrated; every table is emptied afterwards),
``--nodes`` nodes are registered, then ``--n`` sandbox rows are inserted one after another
through ``SqlSandboxStore.create_sandbox`` without a placer (the one-node path) and with
one (list nodes, their loads, lock the best node's row, read its load again, insert), the
two taking turns; then the same creates from ``--concurrency`` tasks on two engines (two
api processes) at once. Prints p50/p95 per insert and inserts per second. No node is
called: this is the store's share of a create.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from sqlalchemy import text

from hutch.api.models import NewSandbox, NewTemplate, TemplateBuildState
from hutch.api.nodes_model import NodeCapacity, NodeRegistration
from hutch.api.service.placement import Demand, Placement, PlacementPolicy
from hutch.api.store.sql import SqlStore, open_sql_store
from hutch.api.store.tables import ALL_TABLES_CHILDREN_FIRST
from hutch.shared.ids import NodeID, TeamID, TemplateID


def _new(team: TeamID, template: TemplateID, node: NodeID | None) -> NewSandbox:
    now = datetime.now(UTC)
    return NewSandbox(
        team_id=team, template_id=template, started_at=now, end_at=now + timedelta(hours=1),
        envd_version="0.6.13", cpu_count=1, memory_mb=128, disk_mb=512, node_id=node,
    )  # fmt: skip


def _ms(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[int(0.95 * (len(ordered) - 1))]
    return f"p50 {statistics.median(ordered) * 1000:6.2f} ms  p95 {p95 * 1000:6.2f} ms"


async def main(url: str, n: int, nodes: int, concurrency: int) -> None:
    store = await open_sql_store(url, migrate=True)
    other = await open_sql_store(url)
    try:
        team = await store.teams.ensure_default_team()
        template = await store.templates.create_template(
            NewTemplate(team_id=team.id, alias="b", build_state=TemplateBuildState.READY)
        )
        for i in range(nodes):
            await store.nodes.register(
                NodeRegistration(
                    node_id=NodeID(f"n{i:03d}"), address=f"http://n{i}", api_version="v1",
                    version="0.1.0", boot_id="b",
                    capacity=NodeCapacity(cpu_count=1024, memory_mb=1 << 30, disk_mb=1,
                                          max_sandboxes=1_000_000),
                ),
                lease_s=3600,
            )  # fmt: skip
        placer = Placement(
            demand=Demand(cpu_count=1, memory_mb=128, template="b"), policy=PlacementPolicy()
        )
        plain: list[float] = []
        placed: list[float] = []
        for _ in range(n):
            start = time.perf_counter()
            await store.sandboxes.create_sandbox(_new(team.id, template.id, NodeID("n000")))
            plain.append(time.perf_counter() - start)
            start = time.perf_counter()
            await store.sandboxes.create_sandbox(_new(team.id, template.id, None), placer=placer)
            placed.append(time.perf_counter() - start)

        async def burst(stores: list[SqlStore]) -> tuple[float, list[float]]:
            times: list[float] = []

            async def one(i: int) -> None:
                for _ in range(n // concurrency):
                    start = time.perf_counter()
                    await stores[i % 2].sandboxes.create_sandbox(
                        _new(team.id, template.id, None), placer=placer
                    )
                    times.append(time.perf_counter() - start)

            start = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(concurrency)))
            return time.perf_counter() - start, times

        wall, times = await burst([store, other])
        print(f"PostgreSQL, {nodes} nodes, {n} creates each way (rows: {2 * n + len(times)})")
        print(f"  insert, no placement (one node):  {_ms(plain)}")
        print(f"  insert with placement:            {_ms(placed)}")
        print(
            f"  with placement, {concurrency} tasks on 2 engines: {_ms(times)}, "
            f"{len(times) / wall:.0f} creates/s"
        )
    finally:
        async with store.engine.begin() as conn:
            names = ", ".join(t.name for t in ALL_TABLES_CHILDREN_FIRST)
            await conn.execute(text(f"TRUNCATE {names} CASCADE"))
        await other.close()
        await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    asyncio.run(main(args.database_url, args.n, args.nodes, args.concurrency))
