"""The reservation half of placement (ADR 0025, ADR 0026): which node a ``creating`` row
goes to, decided inside the insert's own transaction.

Allocation is computed from the sandbox rows (``nodes.node_loads``), so what must not
happen is two transactions both seeing room on a node and both inserting.

Every insert that places a sandbox on node X does so while it holds X's **placement
lock**, a transaction-level advisory lock (``pg_advisory_xact_lock``, key
``advisory_key("hutch.node", X)``), and reads X's row and load after taking it; what it
reads then includes every commit of a previous holder (READ COMMITTED: each statement sees
what committed before it began). The lock is not the node's row, so heartbeats,
registrations and create counters (``UPDATE nodes``) never queue behind placements, and
PostgreSQL grants a released advisory lock to the first waiter (no barging).

Taking it, on PostgreSQL:

1. rank every node, from the api's copy of the nodes and their loads
   (``store/node_view.NodeView``, ADR 0035) and the holders of the template read in the
   transaction; keep the :meth:`~hutch.api.nodes_model.Placer.shortlist` (the nodes as
   good as the best). Without a copy (a caller's own transaction) the nodes and loads are
   read in the transaction;
2. try their locks without waiting: the best first (so creates one after another still
   go to the least allocated node), then the others from a random one round, so racing
   creates take different nodes at once instead of queueing on the best one. With a copy,
   a node's lock is this process's lock of it (``NodeView.lock``, skipped when held) and
   then its advisory lock (``pg_try_advisory_xact_lock``);
3. only when every shortlisted lock is held, wait on one of them chosen at random (the
   process's lock, then the advisory lock), so waiters spread over the shortlist and a
   create never reports that nothing fits because the nodes that fit were busy;
4. read the node's row and load again, in one statement after the lock's (a statement
   sees what committed before it began, so never in the lock's own statement); if it no
   longer fits, :class:`NodeTaken` (the caller retries the transaction without that node,
   and the copy has learnt the node's row and load).

When the copy says nothing fits, the copy is read again before the create answers so
(it may predate a kill or a registration through another api).

A **resume** puts a paused sandbox back on the node it is on, so it has no shortlist: it
waits for that node's lock (:func:`reserve_on`) and does step 4 with the create's capacity
accounting (``service/placement.over_capacity``).

A transaction holds at most one placement lock, taken after the team's (``_lock_team``),
and waits only for it (step 3, or a resume's), holding no other: there is no deadlock.
A process's lock of a node is taken after the team's and before the node's advisory lock
and held until the transaction ends; nothing waits for a team's lock while holding one.
SQLite's ``BEGIN IMMEDIATE`` makes every writer the only one, so it takes the best node
without a lock.
"""

from __future__ import annotations

import random
import time
from contextlib import AsyncExitStack
from datetime import datetime
from typing import Final

from sqlalchemy import Integer, select, text
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import TextClause

from hutch.api.models import NODE_BUSY_STATES, SandboxState
from hutch.api.nodes_model import Candidate, NodeFit, NodeLoad, Placer
from hutch.api.store.base import utc_now
from hutch.api.store.engine import is_sqlite
from hutch.api.store.node_view import NodeView
from hutch.api.store.nodes import (
    lock_placement,
    node_from_row,
    node_loads,
    placement_key,
    store_now,
)
from hutch.api.store.tables import UTCDateTime, nodes
from hutch.shared.errors import UnavailableError
from hutch.shared.ids import NodeID

_TRY: Final = text("SELECT pg_try_advisory_xact_lock(:key)")
_BUSY: Final = ", ".join(f"'{state.value}'" for state in sorted(NODE_BUSY_STATES))
#: The holders of an artifact (``artifacts.held_by``), as a text statement: built once,
#: no expression compiled per create.
_HELD_BY: Final = text(
    "SELECT node_id FROM artifact_holdings WHERE artifact = :artifact AND state = 'held'"
)


def _check_statement(sqlite: bool) -> TextClause:
    """Step 4's one statement: the node's row, its load and the store's clock."""
    columns = ", ".join(f"nodes.{c.name}" for c in nodes.c)
    return text(
        f"SELECT {columns}, {'NULL' if sqlite else 'now()'} AS store_now, "
        "coalesce(l.sandboxes, 0) AS load_sandboxes, coalesce(l.starting, 0) AS load_starting, "
        "coalesce(l.cpu, 0) AS load_cpu, coalesce(l.memory, 0) AS load_memory, "
        "coalesce(l.disk, 0) AS load_disk "
        "FROM nodes LEFT JOIN (SELECT node_id, count(*) AS sandboxes, "
        f"sum(CASE WHEN state = '{SandboxState.CREATING.value}' THEN 1 ELSE 0 END) AS starting, "
        "sum(cpu_count) AS cpu, sum(memory_mb) AS memory, sum(disk_mb) AS disk "
        f"FROM sandboxes WHERE node_id = :node_id AND state IN ({_BUSY}) GROUP BY node_id) l "
        "ON l.node_id = nodes.id WHERE nodes.id = :node_id"
    ).columns(
        *nodes.c, store_now=UTCDateTime(), load_sandboxes=Integer(), load_starting=Integer(),
        load_cpu=Integer(), load_memory=Integer(), load_disk=Integer(),
    )  # fmt: skip


_CHECK: Final = {True: _check_statement(True), False: _check_statement(False)}


class NodeTaken(Exception):
    """The chosen node no longer fits once locked: retry without it."""

    def __init__(self, node_id: NodeID, reason: str) -> None:
        super().__init__(node_id, reason)
        self.node_id = node_id
        self.reason = reason


def _order(shortlist: list[NodeID]) -> list[NodeID]:
    """The best, then the others from a random one round (so that racing creates mostly
    succeed at their second try)."""
    best, rest = shortlist[0], shortlist[1:]
    start = random.randrange(len(rest)) if rest else 0
    return [best, *rest[start:], *rest[:start]]


async def _try(conn: AsyncConnection, node_id: NodeID) -> bool:
    return bool((await conn.execute(_TRY, {"key": placement_key(node_id)})).scalar_one())


async def try_lock_one(conn: AsyncConnection, shortlist: list[NodeID]) -> NodeID | None:
    """The first node (:func:`_order`) whose placement lock this transaction took without
    waiting; None when all are held."""
    for node_id in _order(shortlist):
        if await _try(conn, node_id):
            return node_id
    return None


async def _lock_with_view(
    conn: AsyncConnection, shortlist: list[NodeID], view: NodeView, held: AsyncExitStack
) -> NodeID:
    """Steps 2 and 3 with the process's locks: each is held (``held`` releases it) until
    the transaction ends."""
    for node_id in _order(shortlist):
        local = view.lock(node_id)
        if local.locked():
            continue
        await local.acquire()  # free: returns at once
        if await _try(conn, node_id):
            held.callback(local.release)
            return node_id
        local.release()  # another api's transaction holds it
    node_id = random.choice(shortlist)
    local = view.lock(node_id)
    await local.acquire()
    held.callback(local.release)
    await lock_placement(conn, node_id)
    return node_id


async def _candidates(conn: AsyncConnection, placer: Placer) -> list[Candidate]:
    """Step 1 without a copy: every node and load, read in the transaction."""
    now = await store_now(conn, utc_now)
    listed = [node_from_row(row) for row in await conn.execute(select(nodes))]
    loads = await node_loads(conn)
    return [
        Candidate(node=n, load=loads.get(n.id, NodeLoad()), lease_expired=n.lease_expires_at < now)
        for n in listed
    ]


async def _shortlist(conn: AsyncConnection, placer: Placer, view: NodeView | None) -> list[NodeID]:
    # ADR 0029: the nodes holding the sandbox's template are preferred (no fetch).
    artifact = getattr(placer, "artifact", "")
    holding = (
        {NodeID(r[0]) for r in await conn.execute(_HELD_BY, {"artifact": artifact})}
        if artifact
        else set()
    )

    def ranked(candidates: list[Candidate]) -> list[NodeID]:
        return placer.shortlist(
            [
                Candidate(node=c.node, load=c.load, lease_expired=c.lease_expired,
                          holds_artifact=c.node.id in holding)
                for c in candidates
            ]
        )  # fmt: skip

    if view is None:
        return ranked(await _candidates(conn, placer))
    asked = time.monotonic()
    try:
        return ranked(await view.candidates(conn))
    except UnavailableError:  # the placer's NoNodeFits
        # The copy may predate a kill or a registration through another api: only a
        # read made for this create may say that nothing fits.
        return ranked(await view.candidates(conn, since=asked))


async def reserve(
    conn: AsyncConnection,
    placer: Placer,
    *,
    view: NodeView | None = None,
    held: AsyncExitStack | None = None,
) -> tuple[NodeID, NodeLoad]:
    """The node to insert the new row on, its placement lock held, and its load as the
    locked check read it (module docstring). With ``view``, ``held`` must be given: it
    releases the process's lock of the node once the transaction ended."""
    shortlist = await _shortlist(conn, placer, view)
    if is_sqlite(conn):
        chosen = shortlist[0]
    elif view is not None:
        assert held is not None
        chosen = await _lock_with_view(conn, shortlist, view, held)
    else:
        found = await try_lock_one(conn, shortlist)
        if found is None:
            found = random.choice(shortlist)
            await lock_placement(conn, found)
        chosen = found
    return chosen, await check_locked(conn, chosen, placer, view=view)


async def reserve_node(conn: AsyncConnection, placer: Placer) -> NodeID:
    """:func:`reserve` reading every node in ``conn``'s transaction (no copy): the node."""
    return (await reserve(conn, placer))[0]


async def reserve_on(conn: AsyncConnection, node_id: NodeID, fit: NodeFit) -> None:
    """Put a paused sandbox's CPU and memory back on ``node_id`` (a resume, ADR 0026):
    wait for the node's placement lock, as a create that chose it, and read its row and
    load again; :class:`NodeTaken` when the sandbox does not fit there (nothing changes:
    the caller's transaction rolls back). The caller's row must not be in a node-busy
    state yet, so the load read does not count it already."""
    await lock_placement(conn, node_id)
    await check_locked(conn, node_id, fit)


async def check_locked(
    conn: AsyncConnection, node_id: NodeID, fit: NodeFit, *, view: NodeView | None = None
) -> NodeLoad:
    """Step 4 for ``node_id``, whose placement lock this transaction holds: its load (and
    ``view`` learns its row and load), or :class:`NodeTaken`."""
    sqlite = is_sqlite(conn)
    row = (await conn.execute(_CHECK[sqlite], {"node_id": node_id})).first()
    if row is None:
        raise NodeTaken(node_id, "left the cluster")
    locked = node_from_row(row)
    m = row._mapping
    load = NodeLoad(
        sandboxes=int(m["load_sandboxes"]), starting=int(m["load_starting"]),
        allocated_cpu=int(m["load_cpu"]), allocated_memory_mb=int(m["load_memory"]),
        allocated_disk_mb=int(m["load_disk"]),
    )  # fmt: skip
    if view is not None:
        view.learn(locked, load)
    now: datetime = utc_now() if sqlite else m["store_now"]
    why = fit.misfit(Candidate(node=locked, load=load, lease_expired=locked.lease_expires_at < now))
    if why is not None:
        raise NodeTaken(node_id, why)
    return load
