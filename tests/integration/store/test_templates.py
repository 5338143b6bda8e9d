"""Templates (the minimal set issue 5 needs), on both databases."""

from __future__ import annotations

import pytest

from hutch.api.models import NewTemplate, TemplateBuildState
from hutch.api.store.sql import SqlStore
from hutch.shared.errors import AlreadyExistsError, NotFoundError
from hutch.shared.ids import TemplateID


async def test_templates_visibility_own_and_public(store: SqlStore) -> None:
    a = await store.teams.create_team(name="a")
    b = await store.teams.create_team(name="b")
    base = await store.templates.create_template(
        NewTemplate(team_id=a.id, alias="base", public=True, cpu_count=1, memory_mb=256)
    )
    private = await store.templates.create_template(NewTemplate(team_id=a.id, alias="mine"))
    assert (await store.templates.get_template("base", team_id=b.id)).id == base.id
    assert (await store.templates.get_template(base.id, team_id=b.id)).cpu_count == 1
    assert await store.templates.find_template("mine", team_id=b.id) is None
    with pytest.raises(NotFoundError):
        await store.templates.get_template(private.id, team_id=b.id)
    assert await store.templates.find_template_any_team("mine") == private
    assert [t.id for t in await store.templates.list_templates(team_id=a.id)] == [
        base.id,
        private.id,
    ]
    assert await store.templates.list_templates(team_id=b.id) == []


async def test_templates_alias_is_unique(store: SqlStore) -> None:
    a = await store.teams.create_team(name="a")
    b = await store.teams.create_team(name="b")
    await store.templates.create_template(NewTemplate(team_id=a.id, alias="base"))
    with pytest.raises(AlreadyExistsError):
        await store.templates.create_template(NewTemplate(team_id=b.id, alias="base"))


async def test_templates_build_state_and_delete(store: SqlStore) -> None:
    a = await store.teams.create_team(name="a")
    t = await store.templates.create_template(NewTemplate(team_id=a.id, alias="x"))
    assert t.build_state is TemplateBuildState.WAITING
    done = await store.templates.set_build_state(
        t.id, TemplateBuildState.READY, envd_version="0.6.13"
    )
    assert (done.build_state, done.envd_version) == (TemplateBuildState.READY, "0.6.13")
    with pytest.raises(NotFoundError):
        await store.templates.set_build_state(TemplateID("nope"), TemplateBuildState.ERROR)
    other = await store.teams.create_team(name="b")
    with pytest.raises(NotFoundError):
        await store.templates.delete_template(t.id, team_id=other.id)
    await store.templates.delete_template(t.id, team_id=a.id)
    assert await store.templates.find_template_any_team("x") is None


async def test_template_tags_move_delete_all_or_none_and_cascade(store: SqlStore) -> None:
    a = await store.teams.create_team(name="a")
    t = await store.templates.create_template(NewTemplate(team_id=a.id, alias="tagged"))
    await store.templates.set_tags(t.id, ["default", "v1", "v1"], "b1")
    await store.templates.set_tags(t.id, ["default", "v2"], "b2")  # "default" moves
    assert [(x.tag, x.build_id) for x in await store.templates.list_tags(t.id)] == [
        ("default", "b2"),
        ("v1", "b1"),
        ("v2", "b2"),
    ]
    with pytest.raises(NotFoundError):
        await store.templates.delete_tags(t.id, ["v1", "nope"])
    assert len(await store.templates.list_tags(t.id)) == 3  # nothing removed
    await store.templates.delete_tags(t.id, ["v1"])
    assert [x.tag for x in await store.templates.list_tags(t.id)] == ["default", "v2"]
    with pytest.raises(NotFoundError):
        await store.templates.set_tags(TemplateID("gone"), ["v1"], "b3")
    await store.templates.delete_template(t.id, team_id=a.id)
    assert await store.templates.list_tags(t.id) == []


async def test_templates_set_public_by_the_owner_only(store: SqlStore) -> None:
    a = await store.teams.create_team(name="a")
    b = await store.teams.create_team(name="b")
    t = await store.templates.create_template(NewTemplate(team_id=a.id, alias="pub"))
    assert await store.templates.find_template("pub", team_id=b.id) is None
    published = await store.templates.set_public(t.id, team_id=a.id, public=True)
    assert published.public and published.updated_at >= t.updated_at
    assert (await store.templates.find_template("pub", team_id=b.id)) == published
    with pytest.raises(NotFoundError):
        await store.templates.set_public(t.id, team_id=b.id, public=False)
    assert (await store.templates.find_template("pub", team_id=b.id)) is not None


async def test_a_snapshot_keeps_the_network_policy_it_was_taken_under(store: SqlStore) -> None:
    """``snapshots.network`` (migration 0017): stored, read back by id (only the team's)
    and in listings; a default policy reads back as the default."""
    from hutch.api.models import NetworkConfig
    from hutch.shared.egress import parse_policy
    from hutch.shared.ids import SandboxID

    a = await store.teams.create_team(name="a")
    b = await store.teams.create_team(name="b")
    network = NetworkConfig(
        egress=parse_policy(["allowed.test"], ["0.0.0.0/0"]),
        allow_public_traffic=False,
        mask_request_host="masked.test:${PORT}",
    )
    ids = []
    for alias, policy in (("snap-a", network), ("snap-b", None)):
        t = await store.templates.create_template(NewTemplate(team_id=a.id, alias=alias))
        recorded = await store.snapshots.record_snapshot(
            t.id, team_id=a.id, sandbox_id=SandboxID("isrc"), network=policy
        )
        assert recorded.network == (policy or NetworkConfig())
        ids.append(t.id)
    found = await store.snapshots.find_snapshot(ids[0], team_id=a.id)
    assert found is not None and found.network == network
    assert found.network.egress.domains == ("allowed.test",)
    plain = await store.snapshots.find_snapshot(ids[1], team_id=a.id)
    assert plain is not None and plain.network == NetworkConfig()
    assert await store.snapshots.find_snapshot(ids[0], team_id=b.id) is None
    listed = await store.snapshots.list_snapshots(team_id=a.id)
    assert [s.network for s in listed.items] == [network, NetworkConfig()]
