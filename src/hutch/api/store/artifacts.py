"""``SqlArtifactStore``: which node holds which template artifact (ADR 0029, migration 0015).

A row is (node template name, node): ``held`` means the node has it on disk (placement
prefers it, peers fetch from it); ``deleting`` means the template was deleted while the
node did not answer, and the delete is applied when the node registers or beats again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sqlalchemy import and_, delete, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

from hutch.api.nodes_model import NodeStatus
from hutch.api.store.base import Clock, utc_now
from hutch.api.store.engine import write_transaction
from hutch.api.store.nodes import store_now
from hutch.api.store.tables import artifact_holdings, nodes, templates
from hutch.shared.ids import NodeID

HELD: Final = "held"
DELETING: Final = "deleting"
#: Asked by every create (``ArtifactService.sources_for``): a text statement, built once.
_HOLDS: Final = text(
    "SELECT 1 FROM artifact_holdings WHERE artifact = :artifact AND node_id = :node_id "
    f"AND state = '{HELD}'"
)


def _versions_of(name: str) -> ColumnElement[bool]:
    """``artifact`` is ``name@<build>`` (``LIKE`` with ``name``'s wildcards escaped)."""
    escaped = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return artifact_holdings.c.artifact.like(f"{escaped}@%", escape="\\")


@dataclass(frozen=True, slots=True, kw_only=True)
class Holder:
    """A node that holds an artifact, and how to reach it."""

    node_id: NodeID
    address: str
    state: str
    #: The node may serve it now: not lost, its lease running.
    live: bool


async def held_by(conn: AsyncConnection, artifact: str) -> set[NodeID]:
    """The nodes holding ``artifact`` (inside a caller's transaction: placement)."""
    rows = await conn.execute(
        select(artifact_holdings.c.node_id).where(
            artifact_holdings.c.artifact == artifact, artifact_holdings.c.state == HELD
        )
    )
    return {NodeID(r.node_id) for r in rows}


async def upsert_holding(
    conn: AsyncConnection, artifact: str, node_id: NodeID, state: str = HELD, *, now: datetime
) -> None:
    """``node_id``'s row for ``artifact`` set to ``state``, in the caller's transaction (an
    import writes it with the template's row)."""
    key = and_(artifact_holdings.c.artifact == artifact,
               artifact_holdings.c.node_id == node_id)  # fmt: skip
    changed = await conn.execute(
        update(artifact_holdings).where(key).values(state=state, updated_at=now)
    )
    if changed.rowcount == 0:
        await conn.execute(
            artifact_holdings.insert().values(
                artifact=artifact, node_id=node_id, state=state, updated_at=now
            )
        )


class SqlArtifactStore:
    """See the module docstring."""

    def __init__(self, engine: AsyncEngine, *, clock: Clock = utc_now) -> None:
        self._engine = engine
        self._clock = clock

    async def record(self, artifact: str, node_id: NodeID) -> None:
        """``node_id`` holds ``artifact`` now (it snapshotted, imported or fetched it)."""
        for _ in range(2):
            try:
                async with write_transaction(self._engine) as conn:
                    await self._upsert(conn, artifact, node_id, HELD)
                return
            except IntegrityError:  # another api inserted the same row meanwhile
                continue

    async def _upsert(self, conn: AsyncConnection, artifact: str, node_id: NodeID,
                      state: str) -> None:  # fmt: skip
        await upsert_holding(conn, artifact, node_id, state, now=await store_now(conn, self._clock))

    async def holds(self, artifact: str, node_id: NodeID) -> bool:
        """Whether ``node_id`` has a ``held`` row for ``artifact``."""
        async with self._engine.connect() as conn:
            found = await conn.execute(_HOLDS, {"artifact": artifact, "node_id": node_id})
            return found.first() is not None

    async def holders(self, artifact: str) -> list[Holder]:
        """Every node with a row for ``artifact`` (held or deleting), by node id."""
        async with self._engine.connect() as conn:
            now = await store_now(conn, self._clock)
            rows = await conn.execute(
                select(
                    artifact_holdings.c.node_id,
                    artifact_holdings.c.state,
                    nodes.c.address,
                    nodes.c.status,
                    nodes.c.lease_expires_at,
                )
                .select_from(
                    artifact_holdings.outerjoin(nodes, nodes.c.id == artifact_holdings.c.node_id)
                )
                .where(artifact_holdings.c.artifact == artifact)
                .order_by(artifact_holdings.c.node_id)
            )
            return [
                Holder(
                    node_id=NodeID(r.node_id),
                    address=r.address or "",
                    state=r.state,
                    live=r.address is not None
                    and r.status != NodeStatus.LOST.value
                    and r.lease_expires_at >= now,
                )
                for r in rows
            ]

    async def forget(self, artifact: str, node_id: NodeID) -> None:
        """``node_id`` no longer holds ``artifact`` (deleted there)."""
        async with write_transaction(self._engine) as conn:
            await conn.execute(
                delete(artifact_holdings).where(
                    artifact_holdings.c.artifact == artifact,
                    artifact_holdings.c.node_id == node_id,
                )
            )

    async def version_holders(self, name: str) -> list[NodeID]:
        """The nodes with a row for one of template ``name``'s kept versions
        (``name@build``), held or deleting."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(artifact_holdings.c.node_id)
                .where(_versions_of(name))
                .distinct()
                .order_by(artifact_holdings.c.node_id)
            )
            return [NodeID(r.node_id) for r in rows]

    async def forget_versions(self, name: str, node_id: NodeID) -> None:
        """``node_id`` no longer holds any ``name@build`` (deleting ``name`` there removed
        them with it)."""
        async with write_transaction(self._engine) as conn:
            await conn.execute(
                delete(artifact_holdings).where(
                    _versions_of(name), artifact_holdings.c.node_id == node_id
                )
            )

    async def mark_deleting(self, artifact: str, node_id: NodeID) -> None:
        """Delete ``artifact`` on ``node_id`` when it is back (it did not answer now)."""
        async with write_transaction(self._engine) as conn:
            await self._upsert(conn, artifact, node_id, DELETING)

    async def pending(self, node_id: NodeID) -> list[str]:
        """The artifacts to delete on ``node_id``."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(artifact_holdings.c.artifact)
                .where(
                    artifact_holdings.c.node_id == node_id, artifact_holdings.c.state == DELETING
                )
                .order_by(artifact_holdings.c.artifact)
            )
            return [r.artifact for r in rows]

    async def held(self, node_id: NodeID) -> list[str]:
        """The artifacts ``node_id`` holds, by name."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(artifact_holdings.c.artifact)
                .where(artifact_holdings.c.node_id == node_id, artifact_holdings.c.state == HELD)
                .order_by(artifact_holdings.c.artifact)
            )
            return [r.artifact for r in rows]

    async def sync(self, node_id: NodeID, names: Iterable[str], *, replace: bool) -> None:
        """What the node reports holding: rows added as ``held`` (a ``deleting`` one stays
        so); with ``replace`` (its registration), ``held`` rows it no longer has go.

        Only names of templates the store knows count: a heartbeat listed before a delete
        and read after it must not bring the deleted template's row back."""
        async with write_transaction(self._engine) as conn:
            wanted = {n.partition("@")[0]: n for n in names}
            rows = await conn.execute(select(templates.c.id).where(templates.c.id.in_(wanted)))
            live = {r.id for r in rows}
            reported = {n for n in names if n.partition("@")[0] in live}
            rows = await conn.execute(
                select(artifact_holdings.c.artifact, artifact_holdings.c.state).where(
                    artifact_holdings.c.node_id == node_id
                )
            )
            known = {r.artifact: r.state for r in rows}
            now = await store_now(conn, self._clock)
            new = sorted(reported - known.keys())
            if new:
                await conn.execute(
                    artifact_holdings.insert(),
                    [
                        {"artifact": a, "node_id": node_id, "state": HELD, "updated_at": now}
                        for a in new
                    ],
                )
            # Nodes list their templates, not their kept ``name@build`` versions: a
            # version's row (a fetch recorded it) stays until a delete removes it.
            gone: Sequence[str] = [
                a for a, s in known.items() if s == HELD and a not in reported and "@" not in a
            ]
            if replace and gone:
                await conn.execute(
                    delete(artifact_holdings).where(
                        artifact_holdings.c.node_id == node_id,
                        artifact_holdings.c.artifact.in_(gone),
                    )
                )
