"""Listing: filters (state, metadata, started_after, template) and cursor pagination."""

from __future__ import annotations

from datetime import timedelta

import pytest

from hutch.api.models import SandboxState, SortOrder
from hutch.api.store.sql import SqlStore
from hutch.shared.errors import InvalidArgumentError
from hutch.shared.ids import SandboxID, TeamID, TemplateID

from .factories import T0, new_sandbox


async def _page_through(
    store: SqlStore, team_id: TeamID, *, order: SortOrder, limit: int, between=None
) -> list[SandboxID]:
    seen: list[SandboxID] = []
    token: str | None = None
    pages = 0
    while True:
        page = await store.sandboxes.list_sandboxes(
            team_id=team_id, order=order, limit=limit, next_token=token
        )
        assert len(page.items) <= limit
        seen.extend(s.id for s in page.items)
        pages += 1
        if between is not None:
            await between(pages)
        if page.next_token is None:
            return seen
        token = page.next_token


@pytest.mark.parametrize("order", [SortOrder.ASC, SortOrder.DESC])
@pytest.mark.parametrize("limit", [100, 7])
async def test_listing_paginates_250_rows_without_duplicates_or_gaps(
    store: SqlStore, team_id: TeamID, order: SortOrder, limit: int
) -> None:
    # Three sandboxes share each start time, so the id tie-break is exercised.
    ids = [
        (
            await store.sandboxes.create_sandbox(
                new_sandbox(
                    team_id,
                    id=SandboxID(f"i{n:04d}"),
                    started_at=T0 + timedelta(microseconds=n // 3),
                )
            )
        ).sandbox.id
        for n in range(250)
    ]
    seen = await _page_through(store, team_id, order=order, limit=limit)
    assert len(seen) == len(set(seen)) == 250
    expected = ids if order is SortOrder.ASC else ids[::-1]
    assert seen == expected


@pytest.mark.parametrize("order", [SortOrder.ASC, SortOrder.DESC])
async def test_listing_is_stable_when_rows_are_inserted_meanwhile(
    store: SqlStore, team_id: TeamID, order: SortOrder
) -> None:
    originals = {
        (
            await store.sandboxes.create_sandbox(
                new_sandbox(team_id, started_at=T0 + timedelta(seconds=n % 50))
            )
        ).sandbox.id
        for n in range(250)
    }

    async def insert_more(page: int) -> None:
        # Rows before, inside and after the part already listed.
        for offset in (-1, 25, 60):
            await store.sandboxes.create_sandbox(
                new_sandbox(team_id, started_at=T0 + timedelta(seconds=offset, microseconds=page))
            )

    seen = await _page_through(store, team_id, order=order, limit=30, between=insert_more)
    assert len(seen) == len(set(seen)), "a sandbox was listed twice"
    assert originals <= set(seen), "a sandbox that existed throughout was skipped"


async def test_listing_default_is_newest_first(store: SqlStore, team_id: TeamID) -> None:
    old = await store.sandboxes.create_sandbox(new_sandbox(team_id, started_at=T0))
    new = await store.sandboxes.create_sandbox(
        new_sandbox(team_id, started_at=T0 + timedelta(seconds=1))
    )
    page = await store.sandboxes.list_sandboxes(team_id=team_id)
    assert [s.id for s in page.items] == [new.sandbox.id, old.sandbox.id]
    assert page.next_token is None


async def test_listing_filters_by_metadata_pairs_anded(store: SqlStore, team_id: TeamID) -> None:
    specials = {"a&b": "c=d", "pct%": "100%_", "ключ": "значение ✓", "user": "alice"}
    both = await store.sandboxes.create_sandbox(new_sandbox(team_id, metadata=specials))
    only_user = await store.sandboxes.create_sandbox(
        new_sandbox(team_id, metadata={"user": "alice"})
    )
    await store.sandboxes.create_sandbox(new_sandbox(team_id, metadata={"user": "bob"}))
    # '%' and '_' must not act as wildcards.
    await store.sandboxes.create_sandbox(
        new_sandbox(team_id, metadata={"pct%": "100%x", "a&b": "c=dd"})
    )

    async def ids(metadata: dict[str, str]) -> set[str]:
        page = await store.sandboxes.list_sandboxes(team_id=team_id, metadata=metadata)
        return {s.id for s in page.items}

    assert await ids({"user": "alice"}) == {both.sandbox.id, only_user.sandbox.id}
    assert await ids(specials) == {both.sandbox.id}
    assert await ids({"a&b": "c=d", "pct%": "100%_"}) == {both.sandbox.id}
    assert await ids({"ключ": "значение ✓"}) == {both.sandbox.id}
    assert await ids({"user": "alice", "pct%": "100%"}) == set()
    assert await ids({"pct%": "100%"}) == set()
    assert await ids({"user": "ALICE"}) == set()
    # The listed sandbox carries its whole metadata map, not just the matched pairs.
    page = await store.sandboxes.list_sandboxes(team_id=team_id, metadata={"ключ": "значение ✓"})
    assert page.items[0].metadata == specials


async def test_listing_filters_metadata_with_pagination(store: SqlStore, team_id: TeamID) -> None:
    tagged = set()
    for n in range(40):
        md = {"tag": "yes"} if n % 3 == 0 else {"tag": "no"}
        sbx = await store.sandboxes.create_sandbox(
            new_sandbox(team_id, metadata=md, started_at=T0 + timedelta(seconds=n))
        )
        if n % 3 == 0:
            tagged.add(sbx.sandbox.id)
    seen: list[str] = []
    token = None
    while True:
        page = await store.sandboxes.list_sandboxes(
            team_id=team_id, metadata={"tag": "yes"}, limit=4, next_token=token
        )
        seen += [s.id for s in page.items]
        token = page.next_token
        if token is None:
            break
    assert len(seen) == len(tagged) and set(seen) == tagged


async def test_listing_filters_by_state_time_and_template(store: SqlStore, team_id: TeamID) -> None:
    create = store.sandboxes.create_sandbox
    running = (await create(new_sandbox(team_id, started_at=T0))).sandbox
    paused = (
        await create(
            new_sandbox(team_id, state=SandboxState.PAUSED, started_at=T0 + timedelta(seconds=2))
        )
    ).sandbox
    killed = (await create(new_sandbox(team_id, state=SandboxState.KILLED))).sandbox
    other_tpl = (
        await create(
            new_sandbox(
                team_id,
                template_id=TemplateID("tpl2"),
                alias="busybox",
                started_at=T0 + timedelta(seconds=3),
            )
        )
    ).sandbox

    async def ids(**filters) -> set[str]:
        page = await store.sandboxes.list_sandboxes(team_id=team_id, **filters)
        return {s.id for s in page.items}

    visible = {SandboxState.RUNNING, SandboxState.PAUSED}
    assert await ids(states=visible) == {running.id, paused.id, other_tpl.id}
    assert await ids(states={SandboxState.PAUSED}) == {paused.id}
    assert await ids() == {running.id, paused.id, killed.id, other_tpl.id}
    assert await ids(started_after=T0) == {running.id, paused.id, killed.id, other_tpl.id}
    assert await ids(started_after=T0 + timedelta(microseconds=1)) == {paused.id, other_tpl.id}
    assert await ids(template="busybox") == {other_tpl.id}
    assert await ids(template="tpl2") == {other_tpl.id}
    assert await ids(template="base", states={SandboxState.RUNNING}) == {running.id}


@pytest.mark.parametrize("token", ["garbage", "", "eyJ4IjogMX0", "WzEsIjIwMjYiXQ"])
async def test_listing_rejects_malformed_tokens(
    store: SqlStore, team_id: TeamID, token: str
) -> None:
    if token == "":
        # An empty token means "first page", as the SDK sends on its first call.
        assert (await store.sandboxes.list_sandboxes(team_id=team_id, next_token="")).items == []
        return
    with pytest.raises(InvalidArgumentError):
        await store.sandboxes.list_sandboxes(team_id=team_id, next_token=token)


@pytest.mark.parametrize("limit", [0, -1, 1001])
async def test_listing_rejects_bad_limits(store: SqlStore, team_id: TeamID, limit: int) -> None:
    with pytest.raises(InvalidArgumentError):
        await store.sandboxes.list_sandboxes(team_id=team_id, limit=limit)


async def test_listing_started_after_is_inclusive_at_microsecond_precision(
    store: SqlStore, team_id: TeamID
) -> None:
    """The store keeps ``started_at`` to the microsecond on both databases, and the
    bound is at-or-after (infra's ``>=``): the sandbox's own ``started_at`` lists it,
    one microsecond later does not (issue 18, gap 4)."""
    at = T0 + timedelta(microseconds=467_795)
    sbx = (await store.sandboxes.create_sandbox(new_sandbox(team_id, started_at=at))).sandbox
    assert (await store.sandboxes.get_sandbox(sbx.id, team_id=team_id)).started_at == at

    async def ids(after) -> list[str]:
        page = await store.sandboxes.list_sandboxes(team_id=team_id, started_after=after)
        return [s.id for s in page.items]

    assert await ids(at) == [sbx.id]
    assert await ids(at + timedelta(microseconds=1)) == []
    assert await ids(at - timedelta(microseconds=1)) == [sbx.id]


async def test_count_sandboxes_applies_the_listing_filters(
    store: SqlStore, team_id: TeamID
) -> None:
    create = store.sandboxes.create_sandbox
    for i in range(5):
        await create(
            new_sandbox(team_id, metadata={"n": str(i % 2)}, started_at=T0 + timedelta(seconds=i))
        )
    await create(new_sandbox(team_id, state=SandboxState.PAUSED))
    count = store.sandboxes.count_sandboxes
    running = {SandboxState.RUNNING}
    assert await count(team_id=team_id, states=running) == 5
    assert await count(team_id=team_id, states=running, metadata={"n": "1"}) == 2
    assert (
        await count(team_id=team_id, states=running, started_after=T0 + timedelta(seconds=3)) == 2
    )
    assert await count(team_id=team_id, states={SandboxState.PAUSED}) == 1
