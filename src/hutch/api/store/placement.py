"""The reservation half of placement (ADR 0025, ADR 0026): which node a ``creating`` row
goes to, decided inside the insert's own transaction.

Allocation is computed from the sandbox rows (``nodes.node_loads``), so what must not
happen is two transactions both seeing room on a node and both inserting. Every insert that
places a sandbox on node X does so while it holds X's row lock, and reads X's load again
after taking it; the load it reads then includes every commit of a previous holder
(READ COMMITTED: each statement sees what committed before it began).

Every insert that places a sandbox on node X does so while it holds X's **placement
lock**, a transaction-level advisory lock (``pg_advisory_xact_lock``, key
``advisory_key("hutch.node", X)``), and reads X's row and load after taking it; what it
reads then includes every commit of a previous holder (READ COMMITTED: each statement sees
what committed before it began). The lock is not the node's row, so heartbeats,
registrations and create counters (``UPDATE nodes``) never queue behind placements, and
PostgreSQL grants a released advisory lock to the first waiter (no barging).

Taking it, on PostgreSQL:

1. rank every node from one read of the nodes and their loads; keep the
   :meth:`~hutch.api.nodes_model.Placer.shortlist` (the nodes as good as the best);
2. try their locks without waiting (``pg_try_advisory_xact_lock``): the best first (so
   creates one after another still go to the least allocated node), then the others from
   a random one round, so racing creates take different nodes at once (mostly at their
   second try) instead of queueing on the best one;
3. only when every shortlisted lock is held, wait on one of them chosen at random, so
   waiters spread over the shortlist and a create never reports that nothing fits because
   the nodes that fit were busy;
4. read the node's row and load again; if it no longer fits, :class:`NodeTaken` (the
   caller retries the transaction without that node).

A **resume** puts a paused sandbox back on the node it is on, so it has no shortlist: it
waits for that node's lock (:func:`reserve_on`) and does step 4 with the create's capacity
accounting (``service/placement.over_capacity``).

A transaction holds at most one placement lock, taken after the team's (``_lock_team``),
and waits only for it (step 3, or a resume's), holding no other: there is no deadlock.
SQLite's ``BEGIN IMMEDIATE`` makes every writer the only one, so it takes the best node
without a lock.
"""

from __future__ import annotations

import random
from datetime import datetime
from typing import Final

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from hutch.api.nodes_model import Candidate, NodeFit, NodeLoad, Placer
from hutch.api.store.artifacts import held_by
from hutch.api.store.base import utc_now
from hutch.api.store.engine import is_sqlite
from hutch.api.store.nodes import (
    lock_placement,
    node_from_row,
    node_loads,
    placement_key,
    store_now,
)
from hutch.api.store.tables import nodes
from hutch.shared.ids import NodeID

_TRY: Final = text("SELECT pg_try_advisory_xact_lock(:key)")


class NodeTaken(Exception):
    """The chosen node no longer fits once locked: retry without it."""

    def __init__(self, node_id: NodeID, reason: str) -> None:
        super().__init__(node_id, reason)
        self.node_id = node_id
        self.reason = reason


async def try_lock_one(conn: AsyncConnection, shortlist: list[NodeID]) -> NodeID | None:
    """The first node whose placement lock this transaction took without waiting: the
    best, then the others from a random one round (so that racing creates mostly succeed
    at their second try); None when all are held."""
    best, rest = shortlist[0], shortlist[1:]
    start = random.randrange(len(rest)) if rest else 0
    for node_id in [best, *rest[start:], *rest[:start]]:
        if (await conn.execute(_TRY, {"key": placement_key(node_id)})).scalar_one():
            return node_id
    return None


async def reserve_node(conn: AsyncConnection, placer: Placer) -> NodeID:
    """The node to insert the new row on, its placement lock held (module docstring)."""
    now = await store_now(conn, utc_now)
    listed = [node_from_row(row) for row in await conn.execute(select(nodes))]
    loads = await node_loads(conn)
    # ADR 0029: the nodes holding the sandbox's template are preferred (no fetch).
    artifact = getattr(placer, "artifact", "")
    holding = await held_by(conn, artifact) if artifact else set()
    shortlist = placer.shortlist(
        [
            Candidate(
                node=n,
                load=loads.get(n.id, NodeLoad()),
                lease_expired=n.lease_expires_at < now,
                holds_artifact=n.id in holding,
            )
            for n in listed
        ]
    )
    if is_sqlite(conn):
        chosen = shortlist[0]
    else:
        found = await try_lock_one(conn, shortlist)
        if found is None:
            found = random.choice(shortlist)
            await lock_placement(conn, found)
        chosen = found
    await _check_locked(conn, chosen, placer, now)
    return chosen


async def reserve_on(conn: AsyncConnection, node_id: NodeID, fit: NodeFit) -> None:
    """Put a paused sandbox's CPU and memory back on ``node_id`` (a resume, ADR 0026):
    wait for the node's placement lock, as a create that chose it, and read its row and
    load again; :class:`NodeTaken` when the sandbox does not fit there (nothing changes:
    the caller's transaction rolls back). The caller's row must not be in a node-busy
    state yet, so the load read does not count it already."""
    await lock_placement(conn, node_id)
    await _check_locked(conn, node_id, fit, await store_now(conn, utc_now))


async def _check_locked(
    conn: AsyncConnection, node_id: NodeID, fit: NodeFit, now: datetime
) -> None:
    """Step 4 for ``node_id``, whose placement lock this transaction holds."""
    row = (await conn.execute(select(nodes).where(nodes.c.id == node_id))).first()
    if row is None:
        raise NodeTaken(node_id, "left the cluster")
    locked = node_from_row(row)
    load = (await node_loads(conn, [node_id])).get(node_id, NodeLoad())
    why = fit.misfit(Candidate(node=locked, load=load, lease_expired=locked.lease_expires_at < now))
    if why is not None:
        raise NodeTaken(node_id, why)
