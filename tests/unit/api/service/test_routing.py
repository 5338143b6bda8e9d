"""``RoutedNodeClient``: the proxy's routes follow the node, in the order that keeps the
proxy out of half-made or half-destroyed sandboxes."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from hutch.api.service.ports import SandboxSpec
from hutch.api.service.routing import RoutedNodeClient
from hutch.shared.ids import SandboxID, TeamID, TemplateID
from tests.fakes.node import FakeNodeClient


@dataclass
class RecordingRoutes:
    node: FakeNodeClient
    events: list[tuple[str, str, object]] = field(default_factory=list)

    async def publish(self, route):  # type: ignore[no-untyped-def]
        on_node = route.sandbox_id in self.node.running
        seen = (route.address, route.running, route.auto_resume, on_node)
        self.events.append(("publish", route.sandbox_id, seen))

    async def mark_paused(self, sandbox_id):  # type: ignore[no-untyped-def]
        self.events.append(("paused", sandbox_id, self.node.paused.get(sandbox_id)))

    async def withdraw(self, sandbox_id):  # type: ignore[no-untyped-def]
        self.events.append(("withdraw", sandbox_id, sandbox_id in self.node.running))


def _spec(sid: str) -> SandboxSpec:
    return SandboxSpec(
        sandbox_id=SandboxID(sid), team_id=TeamID("t"), template_id=TemplateID("base"),
        cpu_count=1, memory_mb=256, disk_mb=1024, auto_resume=True,
    )  # fmt: skip


async def test_routing_route_after_create_and_withdrawn_before_kill() -> None:
    node = FakeNodeClient()
    routes = RecordingRoutes(node)
    client = RoutedNodeClient(node, routes=routes)
    placed = await client.create(_spec("s1"))
    await client.pause(SandboxID("s1"), keep_memory=True)
    resumed = await client.resume(_spec("s1"), keep_memory=True)
    await client.kill(SandboxID("s1"))
    assert routes.events == [
        ("publish", "s1", (placed.address, True, True, True)),  # the node had it already
        ("paused", "s1", "full"),
        ("publish", "s1", (resumed.placed.address, True, True, True)),
        ("withdraw", "s1", True),  # still on the node: withdrawn first
    ]
    assert node.killed == ["s1"]


async def test_routing_failed_create_publishes_nothing() -> None:
    node = FakeNodeClient(fail_next_create=RuntimeError("boom"))
    routes = RecordingRoutes(node)
    client = RoutedNodeClient(node, routes=routes)
    with contextlib.suppress(RuntimeError):
        await client.create(_spec("s2"))
    assert routes.events == []
