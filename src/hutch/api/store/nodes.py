"""The node store: cluster membership rows (ADR 0025), with the store's clock.

Every time a lease is computed from is the **database's** clock on PostgreSQL
(``now()`` of the transaction), so N apis on N hosts agree on who has expired whatever
their own clocks say; SQLite (one api) uses the process clock. Status changes are
compare-and-set on the row (``UPDATE ... WHERE status IN (...)``), so a sweeper that runs in
every api marks a node lost exactly once.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import case, func, select, text, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from hutch.api.models import NODE_BUSY_STATES, SandboxState
from hutch.api.nodes_model import (
    Node,
    NodeCapacity,
    NodeLoad,
    NodeRegistration,
    NodeStatus,
    NodeUsage,
    Registered,
)
from hutch.api.store.base import Clock, utc_now
from hutch.api.store.engine import is_sqlite, read_transaction, write_transaction
from hutch.api.store.locks import advisory_key
from hutch.api.store.tables import nodes, sandboxes
from hutch.shared.errors import ConflictError, NotFoundError
from hutch.shared.ids import NodeID

if TYPE_CHECKING:
    from hutch.api.store.node_view import NodeView


def placement_key(node_id: NodeID) -> int:
    """The advisory lock key of the node's placement lock (``store/placement.py``)."""
    return advisory_key("hutch.node", node_id)


async def lock_placement(conn: AsyncConnection, node_id: NodeID) -> None:
    """Wait for the node's placement lock, held until the transaction ends (PostgreSQL;
    SQLite's writers are serialised already)."""
    if not is_sqlite(conn):
        await conn.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": placement_key(node_id)}
        )


def node_from_row(row: Row[Any]) -> Node:
    """A ``nodes`` row as a :class:`Node`."""
    m = row._mapping
    return Node(
        id=NodeID(m["id"]),
        address=m["address"],
        api_version=m["api_version"],
        version=m["version"],
        boot_id=m["boot_id"],
        incarnation=m["incarnation"],
        capacity=NodeCapacity(
            cpu_count=m["cpu_count"],
            memory_mb=m["memory_mb"],
            disk_mb=m["disk_mb"],
            max_sandboxes=m["max_sandboxes"],
        ),
        labels=json.loads(m["labels"]),
        usage=NodeUsage(
            cpu_pct=float(m["used_cpu_pct"]),
            memory_used_mb=m["used_memory_mb"],
            disk_used_mb=m["used_disk_mb"],
        ),
        status=NodeStatus(m["status"]),
        status_changed_at=m["status_changed_at"],
        lost_reason=m["lost_reason"],
        registered_at=m["registered_at"],
        heartbeat_at=m["heartbeat_at"],
        lease_expires_at=m["lease_expires_at"],
        create_successes=int(m["create_successes"]),
        create_fails=int(m["create_fails"]),
        templates=tuple(json.loads(m["templates"])),
    )


def _usage_values(usage: NodeUsage) -> dict[str, Any]:
    return {
        "used_cpu_pct": usage.cpu_pct,
        "used_memory_mb": usage.memory_used_mb,
        "used_disk_mb": usage.disk_used_mb,
    }


async def store_now(conn: AsyncConnection, clock: Clock) -> datetime:
    """The store's clock: PostgreSQL's ``now()`` (the transaction's start), else ``clock()``."""
    if is_sqlite(conn):
        return clock()
    value = (await conn.execute(text("SELECT now()"))).scalar_one()
    assert isinstance(value, datetime)
    return value


async def lock_node(conn: AsyncConnection, node_id: NodeID) -> Node | None:
    """The node's row, locked until the transaction ends on PostgreSQL (``FOR UPDATE``);
    SQLite's ``BEGIN IMMEDIATE`` serialises writers already."""
    query = select(nodes).where(nodes.c.id == node_id)
    if not is_sqlite(conn):
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    return node_from_row(row) if row is not None else None


async def node_loads(
    conn: AsyncConnection, node_ids: Collection[NodeID] | None = None
) -> dict[NodeID, NodeLoad]:
    """What the sandbox rows in node-busy states place on each node (all when ``None``)."""
    s = sandboxes.c
    query = (
        select(
            s.node_id,
            func.count(),
            func.coalesce(func.sum(s.cpu_count), 0),
            func.coalesce(func.sum(s.memory_mb), 0),
            func.coalesce(func.sum(s.disk_mb), 0),
            func.coalesce(func.sum(case((s.state == SandboxState.CREATING.value, 1), else_=0)), 0),
        )
        .where(s.state.in_([st.value for st in NODE_BUSY_STATES]), s.node_id.is_not(None))
        .group_by(s.node_id)
    )
    if node_ids is not None:
        query = query.where(s.node_id.in_(list(node_ids)))
    loads: dict[NodeID, NodeLoad] = {}
    for node_id, count, cpu, memory, disk, starting in await conn.execute(query):
        loads[NodeID(node_id)] = NodeLoad(
            sandboxes=int(count), starting=int(starting), allocated_cpu=int(cpu),
            allocated_memory_mb=int(memory), allocated_disk_mb=int(disk),
        )  # fmt: skip
    return loads


def _node_not_found(node_id: NodeID) -> NotFoundError:
    return NotFoundError(f"node {node_id} not found", public_message=f"Node {node_id} not found")


class SqlNodeStore:
    """Membership rows: register, heartbeat, status changes, listing with load."""

    def __init__(
        self, engine: AsyncEngine, *, clock: Clock = utc_now, view: NodeView | None = None
    ) -> None:
        self._engine = engine
        self._clock = clock
        #: The placements' copy of the nodes (ADR 0035), told of what this store writes.
        self._view = view

    async def now(self) -> datetime:
        """The store's clock (see the module docstring)."""
        async with read_transaction(self._engine) as conn:
            return await store_now(conn, self._clock)

    async def register(self, reg: NodeRegistration, *, lease_s: float) -> Registered:
        """Insert or refresh the node's row and give it a lease of ``lease_s`` from now.

        A ``draining`` node stays draining (an operator's decision outlives restarts); a
        ``lost`` or new one becomes ``ready``.
        """
        async with write_transaction(self._engine) as conn:
            now = await store_now(conn, self._clock)
            previous = await lock_node(conn, reg.node_id)
            values: dict[str, Any] = {
                "address": reg.address,
                "api_version": reg.api_version,
                "version": reg.version,
                "boot_id": reg.boot_id,
                "incarnation": reg.incarnation,
                "cpu_count": reg.capacity.cpu_count,
                "memory_mb": reg.capacity.memory_mb,
                "disk_mb": reg.capacity.disk_mb,
                "max_sandboxes": reg.capacity.max_sandboxes,
                "labels": json.dumps(dict(reg.labels), sort_keys=True),
                "templates": json.dumps(sorted(reg.templates)),
                **_usage_values(reg.usage),
                "registered_at": now,
                "heartbeat_at": now,
                "lease_expires_at": now + timedelta(seconds=lease_s),
            }
            if previous is None:
                await conn.execute(
                    nodes.insert().values(
                        id=reg.node_id, status=NodeStatus.READY.value, status_changed_at=now,
                        **values,
                    )
                )  # fmt: skip
            else:
                status = (
                    NodeStatus.DRAINING
                    if previous.status is NodeStatus.DRAINING
                    else NodeStatus.READY
                )
                if status is not previous.status:
                    values.update(status_changed_at=now, lost_reason=None)
                await conn.execute(
                    update(nodes)
                    .where(nodes.c.id == reg.node_id)
                    .values(status=status.value, **values)
                )
            row = (await conn.execute(select(nodes).where(nodes.c.id == reg.node_id))).one()
        if self._view is not None:
            self._view.invalidate()  # a new node, or new capacity: rank from a new read
        return Registered(node=node_from_row(row), previous=previous)

    async def heartbeat(
        self,
        node_id: NodeID,
        *,
        boot_id: str,
        lease_s: float,
        usage: NodeUsage,
        templates: Sequence[str] | None = None,
    ) -> Node:
        """Renew the lease of a registered, not lost node of that boot.

        :class:`NotFoundError` when the node is unknown or was marked lost (it must
        register again, which reconciles it), :class:`ConflictError` when the row belongs to
        another boot of the node (likewise).
        """
        n = nodes.c
        values: dict[str, Any] = {**_usage_values(usage)}
        if templates is not None:
            values["templates"] = json.dumps(sorted(templates))
        async with write_transaction(self._engine) as conn:
            if is_sqlite(conn):
                now = self._clock()
                values.update(heartbeat_at=now, lease_expires_at=now + timedelta(seconds=lease_s))
            else:  # the database's clock, in the one statement (no SELECT now() before it)
                values.update(heartbeat_at=func.now(),
                              lease_expires_at=func.now() + timedelta(seconds=lease_s))  # fmt: skip
            # One statement: the renewal returns the row (the lease the node is answered).
            row = (
                await conn.execute(
                    update(nodes)
                    .where(n.id == node_id, n.boot_id == boot_id, n.status != NodeStatus.LOST.value)
                    .values(**values)
                    .returning(*nodes.c)
                )
            ).first()
            if row is not None:
                node = node_from_row(row)
                if self._view is not None:
                    self._view.learn(node)
                return node
            row = (await conn.execute(select(nodes).where(n.id == node_id))).first()
        if row is None:
            raise NotFoundError(f"node {node_id} is not registered; register it first")
        node = node_from_row(row)
        if node.status is NodeStatus.LOST:
            raise NotFoundError(
                f"node {node_id} was marked lost ({node.lost_reason}); register it again"
            )
        raise ConflictError(
            f"node {node_id} is registered with boot id {node.boot_id}, not {boot_id}; "
            "register it again"
        )

    async def set_status(
        self,
        node_id: NodeID,
        *,
        new: NodeStatus,
        expected: Collection[NodeStatus],
        reason: str | None = None,
        lease_before: datetime | None = None,
    ) -> Node | None:
        """Compare-and-set the status: the node now, or ``None`` when its status was not in
        ``expected`` (or, with ``lease_before``, its lease was renewed meanwhile).
        :class:`NotFoundError` for an unknown node."""
        async with write_transaction(self._engine) as conn:
            now = await store_now(conn, self._clock)
            n = nodes.c
            query = update(nodes).where(n.id == node_id, n.status.in_([s.value for s in expected]))
            if lease_before is not None:
                query = query.where(n.lease_expires_at < lease_before)
            result = await conn.execute(
                query.values(status=new.value, status_changed_at=now, lost_reason=reason)
            )
            row = (await conn.execute(select(nodes).where(n.id == node_id))).first()
        if row is None:
            raise NotFoundError(
                f"node {node_id} not found", public_message=f"Node {node_id} not found"
            )
        node = node_from_row(row)
        if self._view is not None:
            self._view.learn(node)  # a drain is not offered again by this api's rankings
        return node if result.rowcount else None

    async def mark_lost(
        self, node_id: NodeID, *, reason: str, lease_before: datetime
    ) -> list[str] | None:
        """In one transaction: mark the node ``lost`` if it is ``ready``/``draining`` and its
        lease ended before ``lease_before`` (compare-and-set), and report every live
        sandbox of it killed with ``reason``. The killed ids, or None when another sweeper
        won or the node beat meanwhile."""
        n, s = nodes.c, sandboxes.c
        async with write_transaction(self._engine) as conn:
            # After any create placing a sandbox on it commits, so its row is killed too.
            await lock_placement(conn, node_id)
            now = await store_now(conn, self._clock)
            won = await conn.execute(
                update(nodes)
                .where(
                    n.id == node_id,
                    n.status.in_([NodeStatus.READY.value, NodeStatus.DRAINING.value]),
                    n.lease_expires_at < lease_before,
                )
                .values(status=NodeStatus.LOST.value, status_changed_at=now, lost_reason=reason)
            )
            if won.rowcount == 0:
                return None
            live = s.state != SandboxState.KILLED.value
            ids = [
                row[0] for row in await conn.execute(select(s.id).where(s.node_id == node_id, live))
            ]
            if ids:
                await conn.execute(
                    update(sandboxes)
                    .where(s.id.in_(ids), live)
                    .values(
                        state=SandboxState.KILLED.value, version=s.version + 1, killed_reason=reason
                    )
                )
        if self._view is not None:
            self._view.invalidate()  # after the commit: a read now sees the node lost
        return ids

    async def count_create(self, node_id: NodeID, *, ok: bool) -> None:
        """Count a create's outcome on the node (E2B's ``createSuccesses``/``createFails``)."""
        column = nodes.c.create_successes if ok else nodes.c.create_fails
        async with write_transaction(self._engine) as conn:
            await conn.execute(
                update(nodes).where(nodes.c.id == node_id).values({column: column + 1})
            )

    async def get_node(self, node_id: NodeID) -> Node:
        """The node; :class:`NotFoundError` when it never registered."""
        async with read_transaction(self._engine) as conn:
            row = (await conn.execute(select(nodes).where(nodes.c.id == node_id))).first()
        if row is None:
            raise NotFoundError(
                f"node {node_id} not found", public_message=f"Node {node_id} not found"
            )
        return node_from_row(row)

    async def list_nodes(self) -> list[Node]:
        """Every node, by id."""
        async with read_transaction(self._engine) as conn:
            rows = await conn.execute(select(nodes).order_by(nodes.c.id))
            return [node_from_row(row) for row in rows]

    async def loads(self, node_ids: Collection[NodeID] | None = None) -> dict[NodeID, NodeLoad]:
        """See :func:`node_loads`."""
        async with read_transaction(self._engine) as conn:
            return await node_loads(conn, node_ids)

    async def expired(self, *, grace_s: float) -> tuple[datetime, Sequence[Node]]:
        """The store's now, and the nodes not ``lost`` whose lease ended more than
        ``grace_s`` before it (the lost-node sweeper's candidates)."""
        async with read_transaction(self._engine) as conn:
            now = await store_now(conn, self._clock)
            rows = await conn.execute(
                select(nodes).where(
                    nodes.c.status != NodeStatus.LOST.value,
                    nodes.c.lease_expires_at < now - timedelta(seconds=grace_s),
                )
            )
            return now, [node_from_row(row) for row in rows]
