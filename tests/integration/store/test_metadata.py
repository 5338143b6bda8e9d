"""Metadata patches: merge semantics, state guard, and serialisation under concurrency."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from hutch.api.models import SandboxState, SandboxStateConflictError
from hutch.api.store.engine import write_transaction
from hutch.api.store.sql import SqlStore
from hutch.api.store.tables import sandboxes
from hutch.shared.errors import NotFoundError
from hutch.shared.ids import TeamID

from .factories import new_sandbox


async def test_metadata_patch_merges_sets_and_removes(store: SqlStore, team_id: TeamID) -> None:
    sbx = (
        await store.sandboxes.create_sandbox(
            new_sandbox(team_id, metadata={"keep": "1", "drop": "2", "blank": "3", "chg": "4"})
        )
    ).sandbox
    result = await store.sandboxes.patch_metadata(
        sbx.id,
        {"drop": None, "blank": "", "chg": "four", "new&=%": "ü", "absent": None},
        team_id=team_id,
    )
    assert result == {"keep": "1", "chg": "four", "new&=%": "ü"}
    after = await store.sandboxes.get_sandbox(sbx.id, team_id=team_id)
    assert after.metadata == result
    assert after.version == sbx.version + 1
    # The live value is what the listing filters on.
    page = await store.sandboxes.list_sandboxes(team_id=team_id, metadata={"chg": "four"})
    assert [s.id for s in page.items] == [sbx.id]
    page = await store.sandboxes.list_sandboxes(team_id=team_id, metadata={"chg": "4"})
    assert page.items == []
    # An empty patch changes nothing and returns the map.
    assert await store.sandboxes.patch_metadata(sbx.id, {}, team_id=team_id) == result


@pytest.mark.parametrize(
    "state",
    [
        SandboxState.CREATING,
        SandboxState.PAUSING,
        SandboxState.PAUSED,
        SandboxState.RESUMING,
        SandboxState.KILLING,
        SandboxState.KILLED,
    ],
)
async def test_metadata_patch_requires_running(
    store: SqlStore, team_id: TeamID, state: SandboxState
) -> None:
    sbx = (
        await store.sandboxes.create_sandbox(new_sandbox(team_id, state=state, metadata={"a": "1"}))
    ).sandbox
    with pytest.raises(SandboxStateConflictError) as info:
        await store.sandboxes.patch_metadata(sbx.id, {"a": "2"}, team_id=team_id)
    assert info.value.state is state
    assert state.value in info.value.message
    assert (await store.sandboxes.get_sandbox(sbx.id, team_id=team_id)).metadata == {"a": "1"}
    # Internal callers (e.g. resume restoring metadata) may lift the guard.
    assert await store.sandboxes.patch_metadata(
        sbx.id, {"a": "2"}, team_id=team_id, required_states=None
    ) == {"a": "2"}


async def test_metadata_patch_unknown_sandbox_is_not_found(
    store: SqlStore, team_id: TeamID
) -> None:
    with pytest.raises(NotFoundError):
        await store.sandboxes.patch_metadata("inope", {"a": "b"}, team_id=team_id)


async def test_metadata_20_concurrent_patchers_end_with_the_union(
    store: SqlStore, team_id: TeamID
) -> None:
    sbx = (
        await store.sandboxes.create_sandbox(new_sandbox(team_id, metadata={"base": "0"}))
    ).sandbox
    n = 20

    async def patch(i: int) -> dict[str, str]:
        # Each patcher sets its own key and removes a key nobody has, so a patch that
        # overwrote the whole map instead of merging would lose the others' keys.
        return await store.sandboxes.patch_metadata(
            sbx.id, {f"k{i:02d}": f"v{i}", f"gone{i}": None}, team_id=team_id
        )

    results = await asyncio.gather(*(patch(i) for i in range(n)))
    expected = {"base": "0"} | {f"k{i:02d}": f"v{i}" for i in range(n)}
    final = await store.sandboxes.get_sandbox(sbx.id, team_id=team_id)
    assert final.metadata == expected
    assert final.version == sbx.version + n
    # Serialised end to end: each patch saw every earlier one, so the maps they returned
    # have sizes 2, 3, ..., n + 1 in some order (two concurrent ones would tie).
    assert sorted(len(r) for r in results) == list(range(2, n + 2))
    for i, result in enumerate(results):
        assert result[f"k{i:02d}"] == f"v{i}"


async def test_metadata_concurrent_patches_and_state_change_never_interleave(
    store: SqlStore, team_id: TeamID
) -> None:
    sbx = (await store.sandboxes.create_sandbox(new_sandbox(team_id))).sandbox

    async def patch(i: int) -> bool:
        try:
            await store.sandboxes.patch_metadata(sbx.id, {f"k{i}": "v"}, team_id=team_id)
        except SandboxStateConflictError:
            return False
        return True

    async def pause() -> None:
        await store.sandboxes.set_state(
            sbx.id, team_id=team_id, expected=SandboxState.RUNNING, new=SandboxState.PAUSING
        )

    outcomes = await asyncio.gather(
        *(patch(i) for i in range(10)), pause(), *(patch(i) for i in range(10, 20))
    )
    patched = outcomes[:10] + outcomes[11:]
    applied = {f"k{i}" for i, ok in enumerate(patched) if ok}
    final = await store.sandboxes.get_sandbox(sbx.id, team_id=team_id)
    assert final.state is SandboxState.PAUSING
    # Exactly the patches that reported success are in the map.
    assert set(final.metadata) == applied


async def test_metadata_dies_with_the_sandbox(store: SqlStore, team_id: TeamID) -> None:
    sbx = (await store.sandboxes.create_sandbox(new_sandbox(team_id, metadata={"x": "y"}))).sandbox
    await store.sandboxes.delete_sandbox(sbx.id, team_id=team_id)
    again = await store.sandboxes.create_sandbox(new_sandbox(team_id, id=sbx.id))
    assert again.sandbox.metadata == {}


async def _wait_until_blocked(store: SqlStore, task: asyncio.Task[object]) -> None:
    """Return once ``task`` is blocked on the lock held by the test (no timing involved)."""
    if store.engine.dialect.name != "postgresql":
        # SQLite: the patch's BEGIN IMMEDIATE cannot succeed while the test's write
        # transaction is open, whenever it runs; just let it start.
        for _ in range(20):
            await asyncio.sleep(0)
        return
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    async with store.engine.connect() as probe:
        while not task.done():
            if (await probe.execute(query)).scalar_one() > 0:
                return
            await probe.rollback()
            await asyncio.sleep(0.01)


async def test_metadata_patch_sees_a_state_change_committed_while_it_waited(
    store: SqlStore, team_id: TeamID
) -> None:
    """The state check and the write are one critical section (SELECT ... FOR UPDATE)."""
    sbx = (await store.sandboxes.create_sandbox(new_sandbox(team_id))).sandbox
    async with write_transaction(store.engine) as conn:
        await conn.execute(
            sandboxes.update()
            .where(sandboxes.c.id == sbx.id)
            .values(state=SandboxState.PAUSING.value)
        )
        patch = asyncio.create_task(
            store.sandboxes.patch_metadata(sbx.id, {"late": "yes"}, team_id=team_id)
        )
        await _wait_until_blocked(store, patch)
    with pytest.raises(SandboxStateConflictError) as info:
        await patch
    assert info.value.state is SandboxState.PAUSING
    assert (await store.sandboxes.get_sandbox(sbx.id, team_id=team_id)).metadata == {}
