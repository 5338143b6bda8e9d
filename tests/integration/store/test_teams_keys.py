"""Teams and API keys, on both databases."""

from __future__ import annotations

import asyncio
import hashlib
import re

import pytest
from sqlalchemy import select

from hutch.api.store.sql import SqlStore
from hutch.api.store.tables import api_keys
from hutch.api.store.teams import DEFAULT_TEAM_NAME
from hutch.shared.errors import AlreadyExistsError, NotFoundError, UnauthenticatedError
from hutch.shared.ids import TeamID


async def test_teams_create_get_list_delete(store: SqlStore) -> None:
    a = await store.teams.create_team(name="a")
    b = await store.teams.create_team(name="b")
    assert await store.teams.get_team(a.id) == a
    assert await store.teams.get_team_by_name("b") == b
    assert {t.id for t in await store.teams.list_teams()} == {a.id, b.id}
    await store.teams.delete_team(a.id)
    assert await store.teams.find_team(a.id) is None
    with pytest.raises(NotFoundError):
        await store.teams.delete_team(a.id)


async def test_teams_duplicate_name_is_already_exists(store: SqlStore) -> None:
    await store.teams.create_team(name="dup")
    with pytest.raises(AlreadyExistsError):
        await store.teams.create_team(name="dup")


async def test_teams_default_team_is_created_once_even_concurrently(store: SqlStore) -> None:
    teams = await asyncio.gather(*(store.teams.ensure_default_team() for _ in range(10)))
    assert len({t.id for t in teams}) == 1
    assert teams[0].name == DEFAULT_TEAM_NAME
    assert await store.teams.ensure_default_team() == teams[0]
    assert len(await store.teams.list_teams()) == 1


async def test_keys_create_returns_plaintext_once_and_stores_only_hash(store: SqlStore) -> None:
    team = await store.teams.ensure_default_team()
    created = await store.keys.create_api_key(team.id, name="ci")
    assert re.fullmatch(r"e2b_[0-9a-f]{40}", created.secret)
    assert created.secret not in repr(created)
    async with store.engine.connect() as conn:
        row = (await conn.execute(select(api_keys))).one()
    assert row.key_hash == hashlib.sha256(created.secret.encode()).hexdigest()
    assert created.secret not in (row.mask, row.name, row.id)
    assert row.mask == f"e2b_{created.secret[4:6]}…{created.secret[-4:]}"


async def test_keys_lookup_finds_the_owning_team(store: SqlStore) -> None:
    a = await store.teams.create_team(name="a")
    b = await store.teams.create_team(name="b")
    key_a = await store.keys.create_api_key(a.id)
    key_b = await store.keys.create_api_key(b.id)
    assert await store.keys.get_team_by_api_key(key_a.secret) == a
    assert await store.keys.get_team_by_api_key(key_b.secret) == b


@pytest.mark.parametrize(
    "bad", ["", "e2b_", "e2b_" + "0" * 40, "E2B_" + "a" * 40, "x" * 44, "e2b_" + "g" * 40]
)
async def test_keys_unknown_or_malformed_key_is_unauthenticated(store: SqlStore, bad: str) -> None:
    team = await store.teams.ensure_default_team()
    await store.keys.create_api_key(team.id)
    assert await store.keys.find_team_by_api_key(bad) is None
    with pytest.raises(UnauthenticatedError):
        await store.keys.get_team_by_api_key(bad)


async def test_keys_list_and_delete_are_team_scoped(store: SqlStore) -> None:
    a = await store.teams.create_team(name="a")
    b = await store.teams.create_team(name="b")
    k1 = await store.keys.create_api_key(a.id, name="one")
    k2 = await store.keys.create_api_key(a.id, name="two")
    kb = await store.keys.create_api_key(b.id)
    listed = await store.keys.list_api_keys(a.id)
    assert {k.id for k in listed} == {k1.api_key.id, k2.api_key.id}
    assert {k.name for k in listed} == {"one", "two"}
    with pytest.raises(NotFoundError):
        await store.keys.delete_api_key(kb.api_key.id, team_id=a.id)
    await store.keys.delete_api_key(k1.api_key.id, team_id=a.id)
    assert await store.keys.find_team_by_api_key(k1.secret) is None
    assert await store.keys.get_team_by_api_key(k2.secret) == a
    assert await store.keys.get_team_by_api_key(kb.secret) == b


async def test_keys_for_unknown_team_is_not_found(store: SqlStore) -> None:
    with pytest.raises(NotFoundError):
        await store.keys.create_api_key(TeamID("no-such-team"))


async def test_keys_die_with_their_team(store: SqlStore) -> None:
    team = await store.teams.create_team(name="gone")
    key = await store.keys.create_api_key(team.id)
    await store.teams.delete_team(team.id)
    assert await store.keys.find_team_by_api_key(key.secret) is None


async def test_api_keys_rename_within_the_team_only(store: SqlStore) -> None:
    mine = await store.teams.create_team(name="mine")
    theirs = await store.teams.create_team(name="theirs")
    key = (await store.keys.create_api_key(mine.id, name="old")).api_key
    renamed = await store.keys.rename_api_key(key.id, team_id=mine.id, name="new")
    assert (renamed.id, renamed.name, renamed.mask) == (key.id, "new", key.mask)
    assert [k.name for k in await store.keys.list_api_keys(mine.id)] == ["new"]
    with pytest.raises(NotFoundError):
        await store.keys.rename_api_key(key.id, team_id=theirs.id, name="stolen")
    with pytest.raises(NotFoundError):
        await store.keys.rename_api_key(
            "00000000-0000-0000-0000-000000000000", team_id=mine.id, name="x"
        )
    assert [k.name for k in await store.keys.list_api_keys(mine.id)] == ["new"]


async def test_keys_carry_their_role_and_die_with_their_team(store: SqlStore) -> None:
    team = await store.teams.create_team(name="roles")
    member = await store.keys.create_api_key(team.id, name="m")
    admin = await store.keys.create_api_key(team.id, name="a", admin=True)
    assert member.api_key.admin is False and admin.api_key.admin is True
    found = await store.keys.find_caller(admin.secret)
    assert found is not None and found[0].id == team.id
    assert found[1].id == admin.api_key.id and found[1].admin is True
    found = await store.keys.find_caller(member.secret)
    assert found is not None and found[1].admin is False
    assert [(k.name, k.admin) for k in await store.keys.list_api_keys(team.id)] == [
        ("m", False),
        ("a", True),
    ]
    await store.teams.delete_team(team.id)
    assert await store.keys.find_caller(admin.secret) is None
    assert await store.keys.find_caller(member.secret) is None
