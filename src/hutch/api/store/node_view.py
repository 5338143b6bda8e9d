"""An api's picture of the nodes for ranking placements (ADR 0035), and its per-node locks.

Before, every create read and decoded every ``nodes`` row and the load of every node
inside its transaction (``store/placement.py``): with 100 nodes that was a third of the
api's CPU per create. Ranking only chooses which node's placement lock to try; whether
the sandbox fits is decided again under that lock from the node's row and load read in
the transaction (``placement.check_locked``). So the ranking may come from a copy:

* :class:`NodeView` holds the nodes, their loads and the store's clock as one read saw
  them (:meth:`NodeView.refresh`, in the transaction of the create that needs it), read
  again when older than :data:`MAX_AGE_S`, when this
  process changed a node's membership (:meth:`NodeView.invalidate`: a registration, a
  lost-node sweep) and before a create answers that nothing fits (the copy may predate a
  kill). Between reads it learns: what a locked check read of a node, the row a heartbeat
  or a drain through this api wrote, and each sandbox this api placed.
* What a copy can get wrong is only the order in which nodes are tried: a node drained,
  expired or filled by another api since the read is refused by the check in the
  transaction (the create retries without it, and the copy learns the node's row), a node
  registered or undrained through another api is offered from the next read on.
* :meth:`NodeView.lock` is an in-process lock per node, taken before the node's advisory
  lock: concurrent creates of this process for one node queue here, without a database
  wait, so at most one transaction per api waits for a node's advisory lock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from hutch.api.nodes_model import Candidate, Node, NodeLoad
from hutch.api.store.base import Clock, utc_now
from hutch.api.store.nodes import node_from_row, node_loads, store_now
from hutch.api.store.tables import nodes
from hutch.shared.ids import NodeID

#: How old (seconds) the copy may be before a create reads it again.
MAX_AGE_S: Final = 1.0


class NodeView:
    """See the module docstring. One per store (per api process)."""

    def __init__(self, *, clock: Clock = utc_now) -> None:
        self._clock = clock
        self._nodes: dict[NodeID, Node] = {}
        self._loads: dict[NodeID, NodeLoad] = {}
        #: The store's clock at the read, and ``time.monotonic()`` then.
        self._store_now: datetime | None = None
        self._clock_at = 0.0
        self._read_at: float | None = None
        #: Bumped by :meth:`invalidate`; a read that started before a bump is stale.
        self._generation = 0
        self._reading = asyncio.Lock()
        self._locks: dict[NodeID, asyncio.Lock] = {}
        #: How many reads of the store the copy took (for tests and the bench).
        self.reads = 0
        #: How old the copy may get (:data:`MAX_AGE_S`; a test may make it never age).
        self.max_age_s = MAX_AGE_S

    def lock(self, node_id: NodeID) -> asyncio.Lock:
        """This process's lock of ``node_id`` (see the module docstring)."""
        found = self._locks.get(node_id)
        if found is None:
            found = self._locks[node_id] = asyncio.Lock()
        return found

    def invalidate(self) -> None:
        """This process changed a node's membership: the next create reads again."""
        self._generation += 1
        self._read_at = None

    async def candidates(
        self, conn: AsyncConnection, *, since: float | None = None
    ) -> list[Candidate]:
        """Every node with its load, from a copy no older than :data:`MAX_AGE_S` (and, with
        ``since``, read at or after that ``time.monotonic()``); a read is made in ``conn``'s
        transaction (the caller's: no second connection, so a full pool cannot stall it)."""
        now = time.monotonic()
        if self._stale(now, since):
            async with self._reading:
                if self._stale(time.monotonic(), since):  # nobody read it meanwhile
                    await self.refresh(conn)
        assert self._store_now is not None
        store_now = self._store_now + timedelta(seconds=time.monotonic() - self._clock_at)
        return [
            Candidate(
                node=node,
                load=self._loads.get(node_id, NodeLoad()),
                lease_expired=node.lease_expires_at < store_now,
            )
            for node_id, node in self._nodes.items()
        ]

    def _stale(self, now: float, since: float | None) -> bool:
        if self._read_at is None or now - self._read_at > self.max_age_s:
            return True
        return since is not None and self._read_at < since

    async def refresh(self, conn: AsyncConnection) -> None:
        """Read every node and load again, in ``conn``'s transaction."""
        generation, started = self._generation, time.monotonic()
        now = await store_now(conn, self._clock)
        listed = [node_from_row(row) for row in await conn.execute(select(nodes))]
        loads = await node_loads(conn)
        self.reads += 1
        self._nodes = {n.id: n for n in listed}
        self._loads = loads
        self._store_now, self._clock_at = now, started
        # Invalidated while reading: what was read may predate the change, so it serves
        # this caller and the next one reads again.
        self._read_at = started if generation == self._generation else float("-inf")

    def learn(self, node: Node, load: NodeLoad | None = None) -> None:
        """What a transaction of this process read or wrote of ``node`` (its load too when
        given): the next rankings use it."""
        if self._read_at is None and not self._nodes:
            return  # nothing read yet: the first read brings it
        self._nodes[node.id] = node
        if load is not None:
            self._loads[node.id] = load

    def learn_nodes(self, listed: Iterable[Node]) -> None:
        """:meth:`learn` for each node (no loads)."""
        for node in listed:
            self.learn(node)

    def placed(
        self, node_id: NodeID, load: NodeLoad, *, cpu_count: int, memory_mb: int, disk_mb: int
    ) -> None:
        """This process committed a ``creating`` row on ``node_id``, whose load its locked
        check read as ``load``."""
        self._loads[node_id] = dataclasses.replace(
            load,
            sandboxes=load.sandboxes + 1,
            starting=load.starting + 1,
            allocated_cpu=load.allocated_cpu + cpu_count,
            allocated_memory_mb=load.allocated_memory_mb + memory_mb,
            allocated_disk_mb=load.allocated_disk_mb + disk_mb,
        )
