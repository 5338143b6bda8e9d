"""The sandbox store: every sandbox's record, state machine guard and metadata.

Concurrency rules (docs/store.md):

* state changes are compare-and-set (``UPDATE ... WHERE state IN (expected)``), atomic on
  both databases; a loser gets :class:`SandboxStateConflictError` naming the actual state;
* a metadata patch reads, merges and writes inside one transaction that holds the
  sandbox's row lock (``SELECT ... FOR UPDATE`` on PostgreSQL; ``BEGIN IMMEDIATE`` on
  SQLite, which serialises writers), so concurrent patches end with the union of their
  effects;
* every write bumps ``version``, for callers that want optimistic concurrency.

``team_id`` is a required keyword everywhere: API callers pass their team (another team's
sandbox is then simply not found); internal callers (reaper, proxy, node reconciliation)
pass ``None`` on purpose.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection, Mapping
from contextlib import AsyncExitStack
from datetime import datetime
from typing import Final

from sqlalchemy import case, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.dml import Update

from hutch.api.models import (
    NODE_BUSY_STATES,
    TERMINAL_STATES,
    CreatedSandbox,
    NetworkConfig,
    NewSandbox,
    Sandbox,
    SandboxPage,
    SandboxState,
    SandboxStateConflictError,
    SortOrder,
    TeamQuotas,
)
from hutch.api.nodes_model import NodeFit, Placer
from hutch.api.store.base import Clock, utc_now
from hutch.api.store.engine import read_transaction, write_transaction
from hutch.api.store.errors import is_foreign_key_violation, is_unique_violation
from hutch.api.store.node_view import NodeView
from hutch.api.store.pagination import Cursor, decode_cursor, encode_cursor
from hutch.api.store.placement import NodeTaken, reserve, reserve_on
from hutch.api.store.sandbox_rows import (
    fetch_sandbox,
    listing_query,
    load_metadata,
    metadata_values,
    row_to_sandbox,
    rows_to_sandboxes,
    sandbox_values,
    scoped,
)
from hutch.api.store.tables import (
    idempotency_keys,
    sandbox_metadata,
    sandboxes,
    teams,
    volumes,
)
from hutch.shared.errors import (
    AlreadyExistsError,
    ConflictError,
    InvalidArgumentError,
    NotFoundError,
    QuotaExceededError,
)
from hutch.shared.ids import NodeID, SandboxID, TeamID, new_sandbox_id

#: The ``operation`` recorded with an idempotency key used to create a sandbox.
CREATE_OPERATION: Final = "sandbox.create"
#: The largest page :meth:`SqlSandboxStore.list_sandboxes` returns.
MAX_PAGE_SIZE: Final = 1000


def _not_found(sandbox_id: str) -> NotFoundError:
    return NotFoundError(f"sandbox {sandbox_id} not found")


def _describe(states: Collection[SandboxState]) -> str:
    return " or ".join(sorted(s.value for s in states))


#: States in which a sandbox counts against its team's running quotas (it holds, or is
#: about to hold, CPU and memory on a node).
QUOTA_STATES: Final = frozenset(
    {SandboxState.CREATING, SandboxState.RUNNING, SandboxState.PAUSING, SandboxState.RESUMING}
)


async def _team_load(
    conn: AsyncConnection, team_id: TeamID, states: Collection[SandboxState]
) -> tuple[int, int, int]:
    """How many of the team's sandboxes are in ``states``, and their vCPUs and memory."""
    s = sandboxes.c
    row = (
        await conn.execute(
            select(
                func.count(),
                func.coalesce(func.sum(s.cpu_count), 0),
                func.coalesce(func.sum(s.memory_mb), 0),
            ).where(s.team_id == team_id, s.state.in_([st.value for st in states]))
        )
    ).one()
    return int(row[0]), int(row[1]), int(row[2])


#: States in which a sandbox counts against its team's paused quota (kept on disk).
PAUSED_QUOTA_STATES: Final = frozenset({SandboxState.PAUSING, SandboxState.PAUSED})


async def _lock_team(conn: AsyncConnection, team_id: TeamID) -> None:
    """Queue this transaction behind the team's other quota checks: on PostgreSQL the
    team's row ``FOR UPDATE``; SQLite's writers are serialised already (``BEGIN
    IMMEDIATE``)."""
    if conn.dialect.name != "sqlite":
        await conn.execute(select(teams.c.id).where(teams.c.id == team_id).with_for_update())


async def reserve_under_quota(conn: AsyncConnection, new: NewSandbox, quota: TeamQuotas) -> None:
    """Refuse ``new`` with :class:`QuotaExceededError` if the team's running sandboxes with
    it would exceed ``quota``. Called in the insert's transaction, so the check and the row
    are one step: on SQLite writers are serialised (``BEGIN IMMEDIATE``); on PostgreSQL the
    team's row is locked ``FOR UPDATE`` first, so creates of one team queue here while
    other teams' go on, and concurrent creates for the last slot cannot both see it free."""
    await _lock_team(conn, new.team_id)
    await _check_running(conn, new.team_id, new.cpu_count, new.memory_mb, quota)


async def _check_running(
    conn: AsyncConnection, team_id: TeamID, cpu_count: int, memory_mb: int, quota: TeamQuotas
) -> None:
    """:class:`QuotaExceededError` if one more sandbox of ``cpu_count`` vCPUs and
    ``memory_mb`` MiB would take the team's running sandboxes over ``quota``."""
    running, vcpus, used_mb = await _team_load(conn, team_id, QUOTA_STATES)
    if (limit := quota.limit("max_running_sandboxes")) is not None and running + 1 > limit:
        raise QuotaExceededError(
            f"team {team_id}: {running} running sandboxes, quota {limit}",
            public_message="You have reached the maximum number of concurrent sandboxes "
            f"({limit}): quota maxRunningSandboxes of this team",
        )
    if (limit := quota.limit("max_vcpus")) is not None and vcpus + cpu_count > limit:
        raise QuotaExceededError(
            f"team {team_id}: {vcpus} + {cpu_count} vCPUs, quota {limit}",
            public_message=f"You have reached the maximum total vCPUs of running sandboxes "
            f"({limit}; {vcpus} in use, this sandbox needs {cpu_count}): quota maxVcpus "
            "of this team",
        )
    if (limit := quota.limit("max_memory_mb")) is not None and used_mb + memory_mb > limit:
        raise QuotaExceededError(
            f"team {team_id}: {used_mb} + {memory_mb} MiB, quota {limit}",
            public_message=f"You have reached the maximum total memory of running sandboxes "
            f"({limit} MiB; {used_mb} MiB in use, this sandbox needs {memory_mb} MiB): "
            "quota maxMemoryMB of this team",
        )


async def _check_move(
    conn: AsyncConnection, sandbox_id: str, new: SandboxState, quota: TeamQuotas
) -> None:
    """The quota a move to ``new`` must fit: into the running set (a resume: the running
    quotas) or the paused set (a pause: ``maxPausedSandboxes``). Other moves: none."""
    s = sandboxes.c
    row = (
        await conn.execute(
            select(s.team_id, s.state, s.cpu_count, s.memory_mb).where(s.id == sandbox_id)
        )
    ).first()
    if row is None:
        return  # the compare-and-set reports it
    team_id, state = TeamID(row.team_id), SandboxState(row.state)
    if new in QUOTA_STATES and state not in QUOTA_STATES and quota.limits_sandboxes():
        await _lock_team(conn, team_id)
        await _check_running(conn, team_id, int(row.cpu_count), int(row.memory_mb), quota)
    elif new in PAUSED_QUOTA_STATES and state not in PAUSED_QUOTA_STATES:
        limit = quota.limit("max_paused_sandboxes")
        if limit is None:
            return
        await _lock_team(conn, team_id)
        paused, _, _ = await _team_load(conn, team_id, PAUSED_QUOTA_STATES)
        if paused + 1 > limit:
            raise QuotaExceededError(
                f"team {team_id}: {paused} paused sandboxes, quota {limit}",
                public_message=f"You have reached the maximum number of paused sandboxes "
                f"({limit}): quota maxPausedSandboxes of this team; kill or resume one first",
            )


class SqlSandboxStore:
    """:class:`~hutch.api.store.base.SandboxStore` on SQL."""

    def __init__(
        self, engine: AsyncEngine, *, clock: Clock = utc_now, view: NodeView | None = None
    ) -> None:
        self._engine = engine
        self._clock = clock
        #: The api's copy of the nodes that creates are ranked from (ADR 0035).
        self.view = view if view is not None else NodeView(clock=clock)

    # -- create ---------------------------------------------------------------------------

    async def create_sandbox(
        self,
        new: NewSandbox,
        *,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
        placer: Placer | None = None,
    ) -> CreatedSandbox:
        """Record a new sandbox (state ``new.state``, ``creating`` by default).

        With ``idempotency_key``, a second create of the same team with the same key
        returns the first sandbox with ``created=False`` instead of making another, even
        when both race. A key reused with a different ``request_hash`` (or for another
        operation) is a :class:`ConflictError`. An unknown team is :class:`NotFoundError`.

        With ``placer``, the node is chosen in the same transaction
        (:func:`~hutch.api.store.placement.reserve`): ranked from the api's copy of the
        nodes (:attr:`view`), the first unlocked node of the best ones has its placement
        lock taken (PostgreSQL advisory lock; SQLite has one writer), its row and load read
        again and the row inserted on it, so concurrent creates through any number of api
        processes never overbook a node and do not queue on one lock. A node that no
        longer fits once locked is excluded and the transaction retried.
        """
        while True:
            try:
                return await self._create_once(new, idempotency_key, request_hash, placer)
            except NodeTaken as taken:
                assert placer is not None
                placer = placer.excluding(taken.node_id, taken.reason)

    async def _create_once(
        self,
        new: NewSandbox,
        idempotency_key: str | None,
        request_hash: str | None,
        placer: Placer | None,
    ) -> CreatedSandbox:
        sandbox_id = new.id or new_sandbox_id()
        try:
            # The process's lock of the node (``held``) is released after the commit.
            async with AsyncExitStack() as held:
                async with write_transaction(self._engine) as conn:
                    if idempotency_key is not None:
                        replay = await self._replay(
                            conn, new.team_id, idempotency_key, request_hash
                        )
                        if replay is not None:
                            return CreatedSandbox(sandbox=replay, created=False)
                    if new.quota is not None and new.quota.limits_sandboxes():
                        await reserve_under_quota(conn, new, new.quota)
                    load = None
                    if placer is not None:
                        node_id, load = await reserve(conn, placer, view=self.view, held=held)
                        new = dataclasses.replace(new, node_id=node_id)
                    sandbox = await self._insert(conn, sandbox_id, new)
                    if idempotency_key is not None:
                        await conn.execute(
                            idempotency_keys.insert().values(
                                team_id=new.team_id,
                                key=idempotency_key,
                                operation=CREATE_OPERATION,
                                request_hash=request_hash,
                                sandbox_id=sandbox_id,
                                created_at=self._clock(),
                            )
                        )
                if load is not None and new.node_id is not None:
                    self.view.placed(new.node_id, load, cpu_count=new.cpu_count,
                                     memory_mb=new.memory_mb, disk_mb=new.disk_mb)  # fmt: skip
                return CreatedSandbox(sandbox=sandbox, created=True)
        except IntegrityError as exc:
            if is_foreign_key_violation(exc):
                raise NotFoundError(f"team {new.team_id} not found") from exc
            if not is_unique_violation(exc):
                raise
            collision = exc
        # A unique violation: either we lost a race for the idempotency key (PostgreSQL
        # makes the loser wait for the winner's commit, then fail), or the id was taken.
        if idempotency_key is not None:
            async with read_transaction(self._engine) as conn:
                replay = await self._replay(conn, new.team_id, idempotency_key, request_hash)
            if replay is not None:
                return CreatedSandbox(sandbox=replay, created=False)
        raise AlreadyExistsError(f"sandbox {sandbox_id} already exists") from collision

    async def _insert(
        self, conn: AsyncConnection, sandbox_id: SandboxID, new: NewSandbox
    ) -> Sandbox:
        """Insert the rows; the sandbox as inserted (``RETURNING``: no read back while the
        node's placement lock is held)."""
        row = (
            await conn.execute(
                sandboxes.insert().values(**sandbox_values(sandbox_id, new)).returning(*sandboxes.c)
            )
        ).one()
        if new.metadata:
            await conn.execute(sandbox_metadata.insert(), metadata_values(sandbox_id, new.metadata))
        return row_to_sandbox(row, dict(sorted(new.metadata.items())))  # as read back

    async def _replay(
        self, conn: AsyncConnection, team_id: TeamID, key: str, request_hash: str | None
    ) -> Sandbox | None:
        k = idempotency_keys.c
        row = (
            await conn.execute(select(idempotency_keys).where(k.team_id == team_id, k.key == key))
        ).first()
        if row is None:
            return None
        if row.operation != CREATE_OPERATION or (
            request_hash is not None
            and row.request_hash is not None
            and row.request_hash != request_hash
        ):
            raise ConflictError(f"idempotency key {key!r} was already used for a different request")
        return await fetch_sandbox(conn, row.sandbox_id, team_id=team_id)

    # -- read -----------------------------------------------------------------------------

    async def team_load(
        self, team_id: TeamID, *, states: Collection[SandboxState] = QUOTA_STATES
    ) -> tuple[int, int, int]:
        """The team's sandboxes in ``states``: how many, their vCPUs, their memory (MiB)."""
        async with read_transaction(self._engine) as conn:
            return await _team_load(conn, team_id, states)

    async def count_live(self) -> list[tuple[TeamID, str | None, str, int]]:
        """``(team, template alias, state, count)`` of every sandbox not killed (metrics)."""
        s = sandboxes.c
        query = (
            select(s.team_id, s.alias, s.state, func.count())
            .where(s.state != SandboxState.KILLED.value)
            .group_by(s.team_id, s.alias, s.state)
        )
        async with read_transaction(self._engine) as conn:
            rows = (await conn.execute(query)).all()
        return [(TeamID(r[0]), r[1], str(r[2]), int(r[3])) for r in rows]

    async def usage_by_team(
        self, *, states: Collection[SandboxState], started_after: datetime
    ) -> dict[TeamID, tuple[int, int]]:
        """Per team with any: sandboxes in ``states``, and sandboxes started after
        ``started_after`` (any state: a short-lived one counts as a start too)."""
        s = sandboxes.c
        in_states = func.sum(case((s.state.in_([st.value for st in states]), 1), else_=0))
        started = func.sum(case((s.started_at > started_after, 1), else_=0))
        wanted = s.state.in_([st.value for st in states]) | (s.started_at > started_after)
        query = select(s.team_id, in_states, started).where(wanted).group_by(s.team_id)
        async with read_transaction(self._engine) as conn:
            rows = (await conn.execute(query)).all()
        return {TeamID(r[0]): (int(r[1] or 0), int(r[2] or 0)) for r in rows if r[1] or r[2]}

    async def find_sandbox(self, sandbox_id: str, *, team_id: TeamID | None) -> Sandbox | None:
        """The sandbox, or ``None`` if absent or (with ``team_id``) another team's."""
        async with read_transaction(self._engine) as conn:
            return await fetch_sandbox(conn, sandbox_id, team_id=team_id)

    async def get_sandbox(self, sandbox_id: str, *, team_id: TeamID | None) -> Sandbox:
        """The sandbox; :class:`NotFoundError` if absent or another team's."""
        sandbox = await self.find_sandbox(sandbox_id, team_id=team_id)
        if sandbox is None:
            raise _not_found(sandbox_id)
        return sandbox

    async def list_sandboxes(
        self,
        *,
        team_id: TeamID,
        states: Collection[SandboxState] | None = None,
        metadata: Mapping[str, str] | None = None,
        started_after: datetime | None = None,
        template: str | None = None,
        order: SortOrder = SortOrder.DESC,
        limit: int = 100,
        next_token: str | None = None,
    ) -> SandboxPage:
        """One page of the team's sandboxes, newest first by default.

        Filters are AND-ed: ``states`` (any of), ``metadata`` (every pair must match
        exactly), ``started_after`` (at or after), ``template`` (id or alias). ``next_token``
        is the previous page's token; it is only meaningful with the same filters and order.
        """
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise InvalidArgumentError(f"limit must be between 1 and {MAX_PAGE_SIZE}")
        after = decode_cursor(next_token) if next_token else None
        query = listing_query(
            team_id=team_id,
            states=states,
            metadata=metadata,
            started_after=started_after,
            template=template,
            order=order,
            after=after,
            limit=limit + 1,  # one more tells whether there is a next page
        )
        async with read_transaction(self._engine) as conn:
            rows = list(await conn.execute(query))
            items = await rows_to_sandboxes(conn, rows[:limit])
        token = None
        if len(rows) > limit:
            last = items[-1]
            token = encode_cursor(Cursor(started_at=last.started_at, sandbox_id=last.id))
        return SandboxPage(items=items, next_token=token)

    async def count_sandboxes(
        self,
        *,
        team_id: TeamID,
        states: Collection[SandboxState],
        metadata: Mapping[str, str] | None = None,
        started_after: datetime | None = None,
        template: str | None = None,
    ) -> int:
        """How many of the team's sandboxes pass the listing's filters (no pagination):
        infra's ``X-Total-Running`` counts the running ones this way."""
        query = listing_query(
            team_id=team_id,
            states=states,
            metadata=metadata,
            started_after=started_after,
            template=template,
            order=SortOrder.DESC,
            after=None,
            limit=None,
        )
        counted = select(func.count()).select_from(query.order_by(None).subquery())
        async with read_transaction(self._engine) as conn:
            return int((await conn.execute(counted)).scalar_one())

    async def list_expired(
        self,
        now: datetime,
        *,
        states: Collection[SandboxState] = frozenset({SandboxState.RUNNING}),
        limit: int = 100,
    ) -> list[Sandbox]:
        """Sandboxes of any team whose deadline ``end_at`` is at or before ``now``.

        For the reaper; soonest-expired first.
        """
        s = sandboxes.c
        query = (
            select(sandboxes)
            .where(s.state.in_([st.value for st in states]), s.end_at <= now)
            .order_by(s.end_at, s.id)
            .limit(limit)
        )
        async with read_transaction(self._engine) as conn:
            return await rows_to_sandboxes(conn, await conn.execute(query))

    async def list_stale_creates(
        self, *, started_before: datetime, limit: int = 100
    ) -> list[Sandbox]:
        """Rows of any team still ``creating`` that were inserted before ``started_before``:
        creates whose api died between the row and its outcome (the reaper settles them)."""
        s = sandboxes.c
        query = (
            select(sandboxes)
            .where(s.state == SandboxState.CREATING.value, s.started_at < started_before)
            .order_by(s.started_at, s.id)
            .limit(limit)
        )
        async with read_transaction(self._engine) as conn:
            return await rows_to_sandboxes(conn, await conn.execute(query))

    async def volume_nodes(self, volume_ids: Collection[str]) -> dict[str, NodeID]:
        """The node each volume lives on (ADR 0034: its first mount's, ``volumes.node_id``);
        volumes never mounted are absent."""
        v = volumes.c
        query = select(v.id, v.node_id).where(v.id.in_(list(volume_ids)), v.node_id.is_not(None))
        async with read_transaction(self._engine) as conn:
            return {vid: NodeID(nid) for vid, nid in await conn.execute(query)}

    async def count_on_node(
        self, node_id: NodeID, *, states: Collection[SandboxState] = NODE_BUSY_STATES
    ) -> int:
        """How many sandboxes in ``states`` are placed on ``node_id`` (the node's load)."""
        s = sandboxes.c
        query = select(func.count()).where(
            s.node_id == node_id, s.state.in_([st.value for st in states])
        )
        async with read_transaction(self._engine) as conn:
            return int((await conn.execute(query)).scalar_one())

    # -- write ----------------------------------------------------------------------------

    async def set_state(
        self,
        sandbox_id: str,
        *,
        team_id: TeamID | None,
        expected: SandboxState | Collection[SandboxState],
        new: SandboxState,
        expected_version: int | None = None,
        end_at: datetime | None = None,
        node_id: NodeID | None = None,
        address: str | None = None,
        pause_mode: str | None = None,
        quota: TeamQuotas | None = None,
        fit: tuple[NodeID, NodeFit] | None = None,
    ) -> Sandbox:
        """Move the sandbox from one of ``expected`` to ``new``, atomically.

        Compare-and-set: if the sandbox is in another state, nothing changes and
        :class:`SandboxStateConflictError` names the state it is in (with
        ``expected_version``, a changed version is a :class:`ConflictError`). ``end_at``,
        ``node_id``, ``address`` and ``pause_mode``, when given, are written in the same
        statement. With ``quota``, a move into the running set (a resume) or the paused set
        (a pause) is checked against the team's quotas in the same transaction, behind the
        team's lock as a create's (:class:`QuotaExceededError`: nothing changes). With
        ``fit`` (a resume: its node and demand), the node's placement lock is taken after
        the team's and the sandbox checked to fit there by the create's accounting
        (:func:`~hutch.api.store.placement.reserve_on`; :class:`NodeTaken`: nothing changes).
        """
        wanted = frozenset({expected} if isinstance(expected, SandboxState) else expected)
        values: dict[str, object] = {"state": new.value, "version": sandboxes.c.version + 1}
        changes = (
            ("end_at", end_at), ("node_id", node_id), ("address", address),
            ("pause_mode", pause_mode),
        )  # fmt: skip
        for column, value in changes:
            if value is not None:
                values[column] = value
        cas = (
            update(sandboxes)
            .where(sandboxes.c.id == sandbox_id)
            .where(sandboxes.c.state.in_([s.value for s in wanted]))
            .values(**values)
        )
        if team_id is not None:
            cas = cas.where(sandboxes.c.team_id == team_id)
        if expected_version is not None:
            cas = cas.where(sandboxes.c.version == expected_version)
        async with write_transaction(self._engine) as conn:
            if quota is not None:
                await _check_move(conn, sandbox_id, new, quota)
            if fit is not None:
                await reserve_on(conn, *fit)
            result = await conn.execute(cas)
            if result.rowcount == 0:
                current = await fetch_sandbox(conn, sandbox_id, team_id=team_id)
                if current is None:
                    raise _not_found(sandbox_id)
                if current.state not in wanted:
                    raise SandboxStateConflictError(
                        current.id, current.state, wanted=_describe(wanted)
                    )
                raise ConflictError(
                    f"sandbox {sandbox_id} changed concurrently "
                    f"(version {current.version}, expected {expected_version})"
                )
            sandbox = await fetch_sandbox(conn, sandbox_id, team_id=team_id)
            assert sandbox is not None
            return sandbox

    async def set_end_at(
        self,
        sandbox_id: str,
        *,
        team_id: TeamID | None,
        end_at: datetime,
        extend_only: bool = False,
    ) -> Sandbox:
        """Set the timeout deadline (``POST /sandboxes/{id}/timeout``).

        With ``extend_only`` (v2 ``connect``), an earlier ``end_at`` leaves it as it is.
        A sandbox being killed or killed is a :class:`SandboxStateConflictError`.
        """
        s = sandboxes.c
        new_end = case((s.end_at < end_at, end_at), else_=s.end_at) if extend_only else end_at
        stmt = (
            update(sandboxes)
            .where(s.id == sandbox_id, s.state.not_in([st.value for st in TERMINAL_STATES]))
            .values(end_at=new_end, version=s.version + 1)
        )
        return await self._update_live(stmt, sandbox_id, team_id=team_id)

    async def _update_live(
        self, stmt: Update, sandbox_id: SandboxID, *, team_id: TeamID | None
    ) -> Sandbox:
        """Run ``stmt`` (an UPDATE of one sandbox that must not be ended, narrowed to
        ``team_id`` when given) and return the row; not found, or the state it is in."""
        if team_id is not None:
            stmt = stmt.where(sandboxes.c.team_id == team_id)
        async with write_transaction(self._engine) as conn:
            result = await conn.execute(stmt)
            sandbox = await fetch_sandbox(conn, sandbox_id, team_id=team_id)
        if sandbox is None:
            raise _not_found(sandbox_id)
        if result.rowcount == 0:
            live = frozenset(SandboxState) - TERMINAL_STATES
            raise SandboxStateConflictError(sandbox.id, sandbox.state, wanted=_describe(live))
        return sandbox

    async def mark_killed(
        self, sandbox_id: str, *, team_id: TeamID | None, reason: str | None = None
    ) -> Sandbox:
        """Record that the sandbox is gone (any state to ``killed``; idempotent); ``reason``:
        why, when nobody asked for the kill (shown in its logs)."""
        s = sandboxes.c
        values: dict[str, object] = {"state": SandboxState.KILLED.value, "version": s.version + 1}
        if reason is not None:
            values["killed_reason"] = reason
        stmt = (
            update(sandboxes)
            .where(s.id == sandbox_id, s.state != SandboxState.KILLED.value)
            .values(values)
        )
        if team_id is not None:
            stmt = stmt.where(s.team_id == team_id)
        async with write_transaction(self._engine) as conn:
            await conn.execute(stmt)
            sandbox = await fetch_sandbox(conn, sandbox_id, team_id=team_id)
        if sandbox is None:
            raise _not_found(sandbox_id)
        return sandbox

    async def kill_on_node(self, node_id: NodeID, *, reason: str) -> list[Sandbox]:
        """Report every live sandbox of ``node_id`` killed with ``reason`` (a lost node's),
        in one transaction; the rows it changed."""
        s = sandboxes.c
        async with write_transaction(self._engine) as conn:
            ids = [
                row[0]
                for row in await conn.execute(
                    select(s.id).where(s.node_id == node_id, s.state != SandboxState.KILLED.value)
                )
            ]
            if not ids:
                return []
            await conn.execute(
                update(sandboxes)
                .where(s.id.in_(ids), s.state != SandboxState.KILLED.value)
                .values(
                    state=SandboxState.KILLED.value, version=s.version + 1, killed_reason=reason
                )
            )
            found = [await fetch_sandbox(conn, sid, team_id=None) for sid in ids]
        return [f for f in found if f is not None]

    async def delete_sandbox(self, sandbox_id: str, *, team_id: TeamID | None) -> None:
        """Remove the record, its metadata and idempotency keys for good."""
        s = sandboxes.c
        stmt = delete(sandboxes).where(s.id == sandbox_id)
        if team_id is not None:
            stmt = stmt.where(s.team_id == team_id)
        async with write_transaction(self._engine) as conn:
            result = await conn.execute(stmt)
        if result.rowcount == 0:
            raise _not_found(sandbox_id)

    async def set_network(
        self, sandbox_id: str, network: NetworkConfig, *, team_id: TeamID | None
    ) -> Sandbox:
        """Replace the sandbox's stored ``network`` (``PUT /sandboxes/{id}/network``).

        A sandbox being killed or killed is a :class:`SandboxStateConflictError`.
        """
        s = sandboxes.c
        stmt = (
            update(sandboxes)
            .where(s.id == sandbox_id, s.state.not_in([st.value for st in TERMINAL_STATES]))
            .values(
                network=json.dumps(network.to_json(), sort_keys=True),
                allow_internet=not network.egress.blocks_all,
                version=s.version + 1,
            )
        )
        return await self._update_live(stmt, sandbox_id, team_id=team_id)

    async def patch_metadata(
        self,
        sandbox_id: str,
        patch: Mapping[str, str | None],
        *,
        team_id: TeamID | None,
        required_states: Collection[SandboxState] | None = frozenset({SandboxState.RUNNING}),
    ) -> dict[str, str]:
        """Merge ``patch`` into the sandbox's metadata and return the resulting map.

        A string value sets its key; ``None`` or ``""`` removes it; keys not in ``patch``
        are untouched. Runs under the sandbox's row lock, so concurrent patches serialise
        and end with the union of their effects. A sandbox not in ``required_states``
        (``None``: any) is a :class:`SandboxStateConflictError`.
        """
        s = sandboxes.c
        lock = scoped(select(s.id, s.state), sandbox_id, team_id).with_for_update()
        upserts = {k: v for k, v in patch.items() if v is not None and v != ""}
        async with write_transaction(self._engine) as conn:
            row = (await conn.execute(lock)).first()
            if row is None:
                raise _not_found(sandbox_id)
            state = SandboxState(row.state)
            if required_states is not None and state not in required_states:
                raise SandboxStateConflictError(
                    SandboxID(row.id), state, wanted=_describe(required_states)
                )
            m = sandbox_metadata.c
            if patch:
                # Delete-then-insert is a portable upsert; the row lock makes it atomic.
                await conn.execute(
                    delete(sandbox_metadata).where(m.sandbox_id == row.id, m.key.in_(list(patch)))
                )
            if upserts:
                await conn.execute(
                    sandbox_metadata.insert(), metadata_values(SandboxID(row.id), upserts)
                )
            await conn.execute(
                update(sandboxes).where(s.id == row.id).values(version=s.version + 1)
            )
            return (await load_metadata(conn, [row.id]))[row.id]
