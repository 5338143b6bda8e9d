"""The reservation half of placement (ADR 0025, ADR 0026): which node a ``creating`` row
goes to, decided inside the insert's own transaction.

Allocation is computed from the sandbox rows (``nodes.node_loads``), so what must not
happen is two transactions both seeing room on a node and both inserting. Every insert that
places a sandbox on node X does so while it holds X's row lock, and reads X's load again
after taking it; the load it reads then includes every commit of a previous holder
(READ COMMITTED: each statement sees what committed before it began).

Taking the lock, on PostgreSQL:

1. rank every node from one read of the nodes and their loads; keep the
   :meth:`~hutch.api.nodes_model.Placer.shortlist` (the nodes as good as the best);
2. lock the first of them **no other create holds**, in rank order, with one
   ``SELECT ... ORDER BY rank LIMIT 1 FOR UPDATE SKIP LOCKED``: concurrent creates take
   different nodes at once instead of queueing on the best one's row;
3. only when every shortlisted row is locked, wait (``FOR UPDATE``) on one of them chosen
   at random, so waiters spread over the shortlist and a create never reports that
   nothing fits because the nodes that fit were busy;
4. read the locked node's load again; if it no longer fits, :class:`NodeTaken` (the
   caller retries the transaction without that node).

A transaction holds at most one node lock, taken after the team's (``_lock_team``), and
waits only in step 3, holding no other node's: there is no deadlock. SQLite's ``BEGIN
IMMEDIATE`` makes every writer the only one, so it takes the best node without a lock.
"""

from __future__ import annotations

import random

from sqlalchemy import case, select
from sqlalchemy.ext.asyncio import AsyncConnection

from hutch.api.nodes_model import Candidate, Node, NodeLoad, Placer
from hutch.api.store.artifacts import held_by
from hutch.api.store.base import utc_now
from hutch.api.store.engine import is_sqlite
from hutch.api.store.nodes import lock_node, node_from_row, node_loads, store_now
from hutch.api.store.tables import nodes
from hutch.shared.ids import NodeID


class NodeTaken(Exception):
    """The chosen node no longer fits once locked: retry without it."""

    def __init__(self, node_id: NodeID, reason: str) -> None:
        super().__init__(node_id, reason)
        self.node_id = node_id
        self.reason = reason


async def lock_first_free(conn: AsyncConnection, ranked: list[NodeID]) -> Node | None:
    """The first node of ``ranked`` whose row no other transaction holds, locked until this
    one ends (PostgreSQL ``FOR UPDATE SKIP LOCKED``); None when all are held."""
    order = case({node_id: i for i, node_id in enumerate(ranked)}, value=nodes.c.id)
    query = (
        select(nodes)
        .where(nodes.c.id.in_(ranked))
        .order_by(order)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    row = (await conn.execute(query)).first()
    return node_from_row(row) if row is not None else None


async def reserve_node(conn: AsyncConnection, placer: Placer) -> NodeID:
    """The node to insert the new row on, its row locked (module docstring)."""
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
        chosen, locked = shortlist[0], await lock_node(conn, shortlist[0])
    else:
        locked = await lock_first_free(conn, shortlist)
        if locked is None:
            chosen = random.choice(shortlist)
            locked = await lock_node(conn, chosen)
        else:
            chosen = locked.id
    if locked is None:
        raise NodeTaken(chosen, "left the cluster")
    load = (await node_loads(conn, [chosen])).get(chosen, NodeLoad())
    why = placer.misfit(
        Candidate(node=locked, load=load, lease_expired=locked.lease_expires_at < now)
    )
    if why is not None:
        raise NodeTaken(chosen, why)
    return chosen
