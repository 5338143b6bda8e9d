"""Reconcile after a node restart, and many create/kill cycles leaving nothing behind."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from nodehelpers import count_leaks

from hutch.node.app import Node, build_node
from hutch.node.sandbox import SandboxRequest
from hutch.node.settings import NodeSettings

CYCLES = 20


def new_id() -> str:
    return f"hsm-{uuid.uuid4().hex[:12]}"


async def test_reconcile_adopts_known_removes_unknown_reports_missing(
    node: Node, settings: NodeSettings
) -> None:
    keep, orphan = new_id(), new_id()
    for sid in (keep, orphan):
        await node.manager.create(SandboxRequest(sandbox_id=sid, template="busybox"))
    # A fresh manager on the same home: what a restarted node sees.
    restarted = build_node(settings, build_bundle=False)
    try:
        await restarted.manager.start()
        ghost = new_id()
        report = await restarted.manager.reconcile([keep, ghost])
        assert list(report.adopted) == [keep]
        assert list(report.removed) == [orphan]
        assert list(report.missing) == [ghost]
        adopted = restarted.manager.get(keep)
        async with httpx.AsyncClient(trust_env=False) as http:
            assert (await http.get(adopted.envd_url + "/health")).status_code == 204
        # The adopted address stays reserved: a new sandbox gets another one.
        other = await restarted.manager.create(
            SandboxRequest(sandbox_id=new_id(), template="busybox")
        )
        assert other.address != adopted.address
        assert (await restarted.manager.reconcile([])).removed == sorted([keep, other.sandbox_id])
    finally:
        await restarted.aclose()
    assert (await count_leaks(settings, restarted.manager._runtime)).total() == 0


async def test_reconcile_cleans_half_made_sandboxes(node: Node, settings: NodeSettings) -> None:
    # Leftovers of a crash mid-create: a network and a directory, no container.
    sid = new_id()
    await node.networks.setup(sid, allow_internet=False)
    (settings.sandboxes_dir / sid / "upper").mkdir(parents=True)
    report = await node.manager.reconcile([sid])
    assert list(report.missing) == [sid]
    assert (await count_leaks(settings, node.manager._runtime)).total() == 0


async def test_manager_create_kill_cycles_leave_nothing(node: Node, settings: NodeSettings) -> None:
    for _ in range(CYCLES):
        sbx = await node.manager.create(SandboxRequest(sandbox_id=new_id(), template="busybox"))
        assert await node.manager.kill(sbx.sandbox_id)
    assert (await count_leaks(settings, node.manager._runtime)).total() == 0


async def test_manager_concurrent_creates_then_kills_leave_nothing(
    node: Node, settings: NodeSettings
) -> None:
    ids = [new_id() for _ in range(4)]
    made = await asyncio.gather(
        *(node.manager.create(SandboxRequest(sandbox_id=i, template="busybox")) for i in ids)
    )
    assert len({s.address for s in made}) == len(ids)
    await asyncio.gather(*(node.manager.kill(i) for i in ids))
    assert (await count_leaks(settings, node.manager._runtime)).total() == 0


async def test_manager_cancelled_create_rolls_back(node: Node, settings: NodeSettings) -> None:
    task = asyncio.create_task(
        node.manager.create(SandboxRequest(sandbox_id=new_id(), template="busybox"))
    )
    # Let it get past network setup and into the runtime, then cancel.
    while not any(settings.sandboxes_dir.glob("*/config.json")):
        await asyncio.sleep(0.001)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert node.manager.list() == []
    assert (await count_leaks(settings, node.manager._runtime)).total() == 0
