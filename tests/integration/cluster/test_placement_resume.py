"""A resume puts its sandbox back on its node under that node's placement lock (ADR 0026).

On SQLite and the store tests' real PostgreSQL: a node nearly full with running
sandboxes and others of its paused; resumes of the paused ones race creates through two
``SandboxService``/``PauseService`` pairs on two engines (two api processes; one on
SQLite, which serves one api). The node is never over its capacity, exactly the room left
is taken, and a resume that did not fit answers infra's 503 naming the node and leaves
its sandbox paused on it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass

from hutch.api.models import SandboxState
from hutch.api.service.locks import SandboxLocks
from hutch.api.service.pausing import PauseService
from hutch.api.service.placement import NoNodeFits
from hutch.api.service.ports import PlacedSandbox, ResumedSandbox, SandboxSpec
from hutch.api.service.sandboxes import CreateSandboxRequest, SandboxPolicy, SandboxService
from hutch.api.store.sql import open_sql_store
from hutch.shared.errors import UnavailableError
from hutch.shared.ids import NodeID
from tests.integration.cluster.test_placement_spread import EXACT, WAIT_S, PlacedFake, _setup

#: 4 vCPUs, 4096 MiB: eight ``small`` sandboxes (1 vCPU, 512 MiB) would be 8 vCPUs.
NODE = NodeID("only")
PAUSED = 4
RUNNING = 2
CREATES = 4


@dataclass
class ResumedInPlace(PlacedFake):
    """Resumes a sandbox on the node its spec names (as a real node of the cluster does)."""

    async def resume(self, spec: SandboxSpec, *, keep_memory: bool) -> ResumedSandbox:
        await asyncio.sleep(0.005)
        resumed = await super().resume(spec, keep_memory=keep_memory)
        assert spec.node_id is not None
        placed = PlacedSandbox(sandbox_id=spec.sandbox_id, node_id=spec.node_id,
                               address=resumed.placed.address)  # fmt: skip
        return ResumedSandbox(placed=placed, memory_kept=resumed.memory_kept)


async def _race(url: str) -> tuple[list[int], Counter[str], list[UnavailableError], dict[str, str]]:
    setup, team = await _setup(url, {NODE: (4, 4096, 100)})
    node = ResumedInPlace()
    apis = 1 if url.startswith("sqlite") else 2
    stores = [await open_sql_store(url) for _ in range(apis)]
    policy = SandboxPolicy(max_sandboxes_per_node=None)
    services = [
        SandboxService(sandboxes=s.sandboxes, templates=s.templates, node=node, policy=policy,
                       placement=EXACT, node_stats=s.nodes)
        for s in stores
    ]  # fmt: skip
    pausers = [
        PauseService(sandboxes=s.sandboxes, node=node, locks=SandboxLocks(), service=svc,
                     policy=policy)
        for s, svc in zip(stores, services, strict=True)
    ]  # fmt: skip
    small = CreateSandboxRequest(template="small")
    try:
        paused = []
        for _ in range(PAUSED):
            sandbox = await services[0].create_sandbox(team_id=team, request=small)
            await pausers[0].pause(team_id=team, sandbox_id=sandbox.id)
            paused.append(sandbox.id)
        for _ in range(RUNNING):
            await services[0].create_sandbox(team_id=team, request=small)
        outcomes: Counter[str] = Counter()
        refusals: list[UnavailableError] = []
        peaks = [0, 0]

        async def observe() -> None:
            load = (await setup.nodes.loads()).get(NODE)
            if load is not None:
                peaks[0] = max(peaks[0], load.allocated_cpu)
                peaks[1] = max(peaks[1], load.allocated_memory_mb)

        async def resume(i: int, sandbox_id: str) -> None:
            try:
                await pausers[i % apis].connect(team_id=team, sandbox_id=sandbox_id, timeout_s=60)
            except NoNodeFits:
                raise
            except UnavailableError as exc:
                outcomes["resume refused"] += 1
                refusals.append(exc)
                return
            outcomes["resumed"] += 1
            await observe()

        async def create(i: int) -> None:
            try:
                await services[i % apis].create_sandbox(team_id=team, request=small)
            except NoNodeFits:
                outcomes["create refused"] += 1
                return
            outcomes["created"] += 1
            await observe()

        steps = [resume(i, s) for i, s in enumerate(paused)]
        steps += [create(i) for i in range(CREATES)]
        steps = [steps[j] for j in (0, 4, 1, 5, 2, 6, 3, 7)]  # interleaved
        await asyncio.wait_for(asyncio.gather(*steps), WAIT_S * 3)
        await observe()
        states = {
            s: (await setup.sandboxes.find_sandbox(s, team_id=team)).state.value  # type: ignore[union-attr]
            for s in paused
        }
        return peaks, outcomes, refusals, states
    finally:
        for s in stores:
            await s.close()
        await setup.close()


def test_resumes_racing_creates_never_overbook_and_a_misfit_stays_paused(
    database_url: str,
) -> None:
    peaks, outcomes, refusals, states = asyncio.run(_race(database_url))
    assert peaks[0] <= 4 and peaks[1] <= 4096, peaks
    # The node had room for exactly two more; every other resume or create was refused.
    assert outcomes["resumed"] + outcomes["created"] == 4 - RUNNING, outcomes
    assert outcomes["resume refused"] + outcomes["create refused"] == PAUSED + CREATES - 2
    assert peaks == [4, 4 * 512]  # the room was taken, not lost
    assert list(states.values()).count("paused") == outcomes["resume refused"], states
    assert list(states.values()).count("running") == outcomes["resumed"], states
    for exc in refusals:
        assert exc.error_code == "sandbox_capacity_unavailable"
        assert f"node {NODE} has no room" in (exc.public_message or ""), exc.public_message
        assert "4 + 1 vCPUs over 4 allocatable" in exc.message, exc.message


def test_a_resume_that_does_not_fit_answers_503_and_stays_paused(database_url: str) -> None:
    async def scenario() -> tuple[UnavailableError, SandboxState, int]:
        store, team = await _setup(database_url, {NODE: (2, 4096, 100)})
        node = ResumedInPlace()
        policy = SandboxPolicy(max_sandboxes_per_node=None)
        service = SandboxService(sandboxes=store.sandboxes, templates=store.templates,
                                 node=node, policy=policy, placement=EXACT)  # fmt: skip
        pauser = PauseService(sandboxes=store.sandboxes, node=node, locks=SandboxLocks(),
                              service=service, policy=policy)  # fmt: skip
        small = CreateSandboxRequest(template="small")
        try:
            sleeper = await service.create_sandbox(team_id=team, request=small)
            await pauser.pause(team_id=team, sandbox_id=sleeper.id)
            for _ in range(2):  # the node full while it sleeps
                await service.create_sandbox(team_id=team, request=small)
            try:
                await pauser.resume(team_id=team, sandbox_id=sleeper.id, timeout_s=60)
            except UnavailableError as exc:
                refused = exc
            else:
                raise AssertionError("the resume overbooked the node")
            after = await store.sandboxes.find_sandbox(sleeper.id, team_id=team)
            assert after is not None
            return refused, after.state, len(node.resumes)
        finally:
            await store.close()

    refused, state, resumes = asyncio.run(scenario())
    assert refused.error_code == "sandbox_capacity_unavailable"
    assert refused.public_message == (
        f"Failed to resume sandbox {refused.message.split()[1]}: its node only has no room "
        "for it right now (2 + 1 vCPUs over 2 allocatable), please retry shortly"
    )
    assert state is SandboxState.PAUSED  # nothing half-made: it stays paused on its node
    assert resumes == 0  # the node was never asked
