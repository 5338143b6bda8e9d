"""Sandbox records: CRUD, team isolation, state compare-and-set, deadlines, idempotency."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from hutch.api.models import SandboxState, SandboxStateConflictError
from hutch.api.store.sql import SqlStore
from hutch.shared.errors import AlreadyExistsError, ConflictError, NotFoundError
from hutch.shared.ids import NodeID, SandboxID, TeamID, is_valid_sandbox_id

from .factories import T0, new_sandbox


async def test_sandboxes_create_and_get_round_trip_every_field(
    store: SqlStore, team_id: TeamID
) -> None:
    spec = new_sandbox(
        team_id,
        state=SandboxState.CREATING,
        metadata={"user": "ü-1", "k&=%": "v&=%"},
        env_vars={"SECRET": "s3cr3t", "EMPTY": ""},
        envd_access_token="tok",
        node_id=NodeID("node-1"),
        address="10.11.0.2",
        auto_pause=True,
        auto_pause_memory=False,
        allow_internet=False,
        cpu_count=4,
        memory_mb=2048,
        disk_mb=4096,
    )
    created = await store.sandboxes.create_sandbox(spec)
    assert created.created
    sbx = created.sandbox
    assert is_valid_sandbox_id(sbx.id) and sbx.id.startswith("i") and len(sbx.id) == 21
    got = await store.sandboxes.get_sandbox(sbx.id, team_id=team_id)
    assert got == sbx
    assert got.state is SandboxState.CREATING
    assert got.metadata == {"user": "ü-1", "k&=%": "v&=%"}
    assert got.env_vars == {"SECRET": "s3cr3t", "EMPTY": ""}
    assert (got.started_at, got.end_at) == (T0, T0 + timedelta(seconds=300))
    assert got.started_at.tzinfo is not None and got.started_at.microsecond == T0.microsecond
    assert (got.envd_access_token, got.envd_version) == ("tok", "0.6.13")
    assert (got.node_id, got.address) == ("node-1", "10.11.0.2")
    assert (got.auto_pause, got.allow_internet) == (True, False)
    assert got.auto_pause_memory is False
    assert (got.cpu_count, got.memory_mb, got.disk_mb) == (4, 2048, 4096)
    assert got.version == 1


async def test_sandboxes_other_team_sees_not_found(store: SqlStore, team_id: TeamID) -> None:
    other = (await store.teams.create_team(name="team-b")).id
    sbx = (await store.sandboxes.create_sandbox(new_sandbox(team_id))).sandbox
    assert await store.sandboxes.find_sandbox(sbx.id, team_id=other) is None
    with pytest.raises(NotFoundError):
        await store.sandboxes.get_sandbox(sbx.id, team_id=other)
    with pytest.raises(NotFoundError):
        await store.sandboxes.patch_metadata(sbx.id, {"a": "b"}, team_id=other)
    with pytest.raises(NotFoundError):
        await store.sandboxes.set_end_at(sbx.id, team_id=other, end_at=T0)
    with pytest.raises(NotFoundError):
        await store.sandboxes.set_state(
            sbx.id, team_id=other, expected=SandboxState.RUNNING, new=SandboxState.PAUSED
        )
    with pytest.raises(NotFoundError):
        await store.sandboxes.mark_killed(sbx.id, team_id=other)
    with pytest.raises(NotFoundError):
        await store.sandboxes.delete_sandbox(sbx.id, team_id=other)
    assert (await store.sandboxes.list_sandboxes(team_id=other)).items == []
    # Nothing above touched it.
    assert await store.sandboxes.get_sandbox(sbx.id, team_id=team_id) == sbx
    # Internal callers (team_id=None) see every team's sandboxes.
    assert await store.sandboxes.get_sandbox(sbx.id, team_id=None) == sbx


async def test_sandboxes_duplicate_id_is_already_exists(store: SqlStore, team_id: TeamID) -> None:
    await store.sandboxes.create_sandbox(new_sandbox(team_id, id=SandboxID("iabc")))
    with pytest.raises(AlreadyExistsError):
        await store.sandboxes.create_sandbox(new_sandbox(team_id, id=SandboxID("iabc")))


async def test_sandboxes_unknown_team_is_not_found(store: SqlStore) -> None:
    with pytest.raises(NotFoundError):
        await store.sandboxes.create_sandbox(new_sandbox(TeamID("nope")))


async def test_sandboxes_idempotency_key_replays_the_first_create(
    store: SqlStore, team_id: TeamID
) -> None:
    first = await store.sandboxes.create_sandbox(
        new_sandbox(team_id, metadata={"n": "1"}), idempotency_key="k-1", request_hash="h"
    )
    again = await store.sandboxes.create_sandbox(
        new_sandbox(team_id, metadata={"n": "2"}), idempotency_key="k-1", request_hash="h"
    )
    assert first.created and not again.created
    assert again.sandbox == first.sandbox
    other_key = await store.sandboxes.create_sandbox(new_sandbox(team_id), idempotency_key="k-2")
    assert other_key.created and other_key.sandbox.id != first.sandbox.id
    page = await store.sandboxes.list_sandboxes(team_id=team_id)
    assert len(page.items) == 2


async def test_sandboxes_idempotency_key_is_per_team(store: SqlStore, team_id: TeamID) -> None:
    other = (await store.teams.create_team(name="team-b")).id
    a = await store.sandboxes.create_sandbox(new_sandbox(team_id), idempotency_key="same")
    b = await store.sandboxes.create_sandbox(new_sandbox(other), idempotency_key="same")
    assert a.created and b.created
    assert a.sandbox.id != b.sandbox.id
    assert b.sandbox.team_id == other


async def test_sandboxes_idempotency_key_with_other_request_is_conflict(
    store: SqlStore, team_id: TeamID
) -> None:
    await store.sandboxes.create_sandbox(
        new_sandbox(team_id), idempotency_key="k", request_hash="one"
    )
    with pytest.raises(ConflictError):
        await store.sandboxes.create_sandbox(
            new_sandbox(team_id), idempotency_key="k", request_hash="two"
        )


async def test_sandboxes_idempotency_concurrent_retries_make_one_sandbox(
    store: SqlStore, team_id: TeamID
) -> None:
    results = await asyncio.gather(
        *(
            store.sandboxes.create_sandbox(new_sandbox(team_id), idempotency_key="race")
            for _ in range(10)
        )
    )
    assert sum(r.created for r in results) == 1
    assert len({r.sandbox.id for r in results}) == 1
    assert len((await store.sandboxes.list_sandboxes(team_id=team_id)).items) == 1


async def test_sandboxes_set_state_compare_and_set(store: SqlStore, team_id: TeamID) -> None:
    sbx = (
        await store.sandboxes.create_sandbox(new_sandbox(team_id, state=SandboxState.CREATING))
    ).sandbox
    running = await store.sandboxes.set_state(
        sbx.id,
        team_id=team_id,
        expected=SandboxState.CREATING,
        new=SandboxState.RUNNING,
        node_id=NodeID("n1"),
        address="10.0.0.9",
    )
    assert (running.state, running.node_id, running.address) == ("running", "n1", "10.0.0.9")
    assert running.version == sbx.version + 1
    with pytest.raises(SandboxStateConflictError) as info:
        await store.sandboxes.set_state(
            sbx.id, team_id=team_id, expected=SandboxState.PAUSED, new=SandboxState.RESUMING
        )
    assert info.value.state is SandboxState.RUNNING
    assert "running" in info.value.message
    # A set of expected states; and the stale-version check.
    with pytest.raises(ConflictError):
        await store.sandboxes.set_state(
            sbx.id,
            team_id=team_id,
            expected={SandboxState.RUNNING, SandboxState.PAUSED},
            new=SandboxState.PAUSING,
            expected_version=sbx.version,
        )
    pausing = await store.sandboxes.set_state(
        sbx.id,
        team_id=team_id,
        expected={SandboxState.RUNNING, SandboxState.PAUSED},
        new=SandboxState.PAUSING,
        expected_version=running.version,
    )
    assert pausing.state is SandboxState.PAUSING


async def test_sandboxes_set_state_concurrent_transitions_have_one_winner(
    store: SqlStore, team_id: TeamID
) -> None:
    sbx = (await store.sandboxes.create_sandbox(new_sandbox(team_id))).sandbox

    async def pause() -> bool:
        try:
            await store.sandboxes.set_state(
                sbx.id, team_id=team_id, expected=SandboxState.RUNNING, new=SandboxState.PAUSING
            )
        except SandboxStateConflictError as exc:
            assert exc.state is SandboxState.PAUSING
            return False
        return True

    outcomes = await asyncio.gather(*(pause() for _ in range(10)))
    assert outcomes.count(True) == 1


async def test_sandboxes_set_end_at_and_extend_only(store: SqlStore, team_id: TeamID) -> None:
    sbx = (await store.sandboxes.create_sandbox(new_sandbox(team_id))).sandbox
    later = T0 + timedelta(hours=1)
    assert (await store.sandboxes.set_end_at(sbx.id, team_id=team_id, end_at=later)).end_at == later
    # Shortening is allowed unless extend_only.
    earlier = T0 + timedelta(seconds=10)
    kept = await store.sandboxes.set_end_at(
        sbx.id, team_id=team_id, end_at=earlier, extend_only=True
    )
    assert kept.end_at == later
    assert (
        await store.sandboxes.set_end_at(sbx.id, team_id=team_id, end_at=earlier)
    ).end_at == earlier
    further = T0 + timedelta(hours=2)
    assert (
        await store.sandboxes.set_end_at(sbx.id, team_id=team_id, end_at=further, extend_only=True)
    ).end_at == further
    await store.sandboxes.mark_killed(sbx.id, team_id=team_id)
    with pytest.raises(SandboxStateConflictError) as info:
        await store.sandboxes.set_end_at(sbx.id, team_id=team_id, end_at=later)
    assert info.value.state is SandboxState.KILLED


async def test_sandboxes_mark_killed_then_delete(store: SqlStore, team_id: TeamID) -> None:
    sbx = (
        await store.sandboxes.create_sandbox(
            new_sandbox(team_id, metadata={"a": "1"}), idempotency_key="k"
        )
    ).sandbox
    killed = await store.sandboxes.mark_killed(sbx.id, team_id=team_id)
    assert killed.state is SandboxState.KILLED
    assert (await store.sandboxes.mark_killed(sbx.id, team_id=team_id)).version == killed.version
    await store.sandboxes.delete_sandbox(sbx.id, team_id=team_id)
    assert await store.sandboxes.find_sandbox(sbx.id, team_id=None) is None
    with pytest.raises(NotFoundError):
        await store.sandboxes.delete_sandbox(sbx.id, team_id=team_id)
    # The idempotency key went with it: a retry now creates a new sandbox.
    again = await store.sandboxes.create_sandbox(new_sandbox(team_id), idempotency_key="k")
    assert again.created


async def test_sandboxes_list_expired_for_the_reaper(store: SqlStore, team_id: TeamID) -> None:
    other = (await store.teams.create_team(name="team-b")).id
    due = [
        (
            await store.sandboxes.create_sandbox(new_sandbox(t, end_at=T0 + timedelta(seconds=s)))
        ).sandbox.id
        for t, s in ((team_id, 5), (other, 1), (team_id, 10))
    ]
    await store.sandboxes.create_sandbox(new_sandbox(team_id, end_at=T0 + timedelta(seconds=11)))
    paused = await store.sandboxes.create_sandbox(
        new_sandbox(team_id, end_at=T0, state=SandboxState.PAUSED)
    )
    now = T0 + timedelta(seconds=10)
    expired = await store.sandboxes.list_expired(now)
    assert [s.id for s in expired] == [due[1], due[0], due[2]]
    assert [s.id for s in await store.sandboxes.list_expired(now, limit=1)] == [due[1]]
    paused_expired = await store.sandboxes.list_expired(now, states={SandboxState.PAUSED})
    assert [s.id for s in paused_expired] == [paused.sandbox.id]


async def test_sandboxes_count_on_node(store: SqlStore, team_id: TeamID) -> None:
    n1, n2 = NodeID("n1"), NodeID("n2")
    for state in (SandboxState.RUNNING, SandboxState.CREATING, SandboxState.KILLED):
        await store.sandboxes.create_sandbox(new_sandbox(team_id, node_id=n1, state=state))
    await store.sandboxes.create_sandbox(new_sandbox(team_id, node_id=n2))
    assert await store.sandboxes.count_on_node(n1) == 2
    assert await store.sandboxes.count_on_node(n2) == 1
    assert await store.sandboxes.count_on_node(n1, states={SandboxState.KILLED}) == 1
    assert await store.sandboxes.count_on_node(NodeID("n3")) == 0


async def test_sandboxes_auto_pause_memory_defaults_to_true(
    store: SqlStore, team_id: TeamID
) -> None:
    sbx = (await store.sandboxes.create_sandbox(new_sandbox(team_id, auto_pause=True))).sandbox
    assert (await store.sandboxes.get_sandbox(sbx.id, team_id=team_id)).auto_pause_memory


async def test_volume_mounts_of_many_sandboxes_in_one_query(
    store: SqlStore, team_id: TeamID
) -> None:
    from hutch.api.models import VolumeMount
    from hutch.shared.ids import VolumeID

    vol = VolumeID("vol00000000000000000001")
    await store.volumes.create_volume(
        volume_id=vol, team_id=team_id, name="data", quota_bytes=1 << 20, backend="local",
        token_secret="s",
    )  # fmt: skip
    a = (await store.sandboxes.create_sandbox(new_sandbox(team_id))).sandbox
    b = (await store.sandboxes.create_sandbox(new_sandbox(team_id))).sandbox
    mounts = [VolumeMount(volume_id=vol, name="data", path=p) for p in ("/mnt/y", "/mnt/x")]
    await store.volumes.add_mounts(a.id, mounts)
    found = await store.volumes.mounts_of_many([a.id, b.id])
    assert [(m.name, m.path) for m in found[a.id]] == [("data", "/mnt/x"), ("data", "/mnt/y")]
    assert found[b.id] == []
    assert await store.volumes.mounts_of_many([]) == {}


async def test_a_local_volume_keeps_the_node_it_was_created_on(
    store: SqlStore, team_id: TeamID
) -> None:
    """ADR 0034: a local volume's node is recorded at create; a mount on another node is
    refused and records nothing; a volume made without a node (before volumes lived on
    nodes) is claimed once, by its first mount or by ``claim_volume_node``, and two claims
    agree; an S3 volume is nobody's."""
    from hutch.api.models import VolumeMount
    from hutch.api.store.volumes import VolumeNodeTaken
    from hutch.shared.ids import VolumeID

    local, s3 = VolumeID("vol00000000000000000011"), VolumeID("vol00000000000000000012")
    old, older = VolumeID("vol00000000000000000013"), VolumeID("vol00000000000000000014")
    for vid, name, backend, node in (
        (local, "data", "local", "n1"), (s3, "blobs", "s3", None),
        (old, "old", "local", None), (older, "older", "local", None),
    ):  # fmt: skip
        await store.volumes.create_volume(
            volume_id=vid, team_id=team_id, name=name, quota_bytes=1 << 20, backend=backend,
            token_secret="s", node_id=node,
        )  # fmt: skip
    assert await store.sandboxes.volume_nodes([local, s3, old]) == {local: "n1"}
    assert (await store.volumes.get_volume(local, team_id=team_id)).node_id == "n1"
    a = (await store.sandboxes.create_sandbox(new_sandbox(team_id, node_id="n1"))).sandbox
    b = (await store.sandboxes.create_sandbox(new_sandbox(team_id, node_id="n2"))).sandbox
    mounts = [
        VolumeMount(volume_id=local, name="data", path="/mnt/d"),
        VolumeMount(volume_id=s3, name="blobs", path="/mnt/b", backend="s3"),
    ]
    await store.volumes.add_mounts(a.id, mounts, node_id="n1")
    with pytest.raises(VolumeNodeTaken) as taken:
        await store.volumes.add_mounts(b.id, mounts, node_id="n2")
    assert (taken.value.volume_id, taken.value.node_id) == (local, "n1")
    assert taken.value.error_code == "volume_node_unavailable"
    assert await store.volumes.mounts_of(b.id) == []  # the refused mount left no row
    # A volume without a node: its first mount claims it.
    await store.volumes.add_mounts(
        b.id, [VolumeMount(volume_id=old, name="old", path="/o")], node_id="n2"
    )
    assert await store.sandboxes.volume_nodes([old]) == {old: "n2"}
    assert await store.volumes.claim_volume_node(old, "n1") == "n2"  # claimed already
    assert await store.volumes.claim_volume_node(older, "n1") == "n1"
    assert await store.volumes.claim_volume_node(older, "n2") == "n1"
    with pytest.raises(NotFoundError):
        await store.volumes.claim_volume_node(VolumeID("vol00000000000000000099"), "n1")
