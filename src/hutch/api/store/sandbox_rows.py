"""Rows to domain objects for sandboxes, and the queries the sandbox store composes.

Kept apart from ``sandboxes.py`` so that each module stays one concept: this one knows the
shape of the rows, that one knows the operations and their transactions.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from hutch.api.models import NetworkConfig, NewSandbox, Sandbox, SandboxState, SortOrder
from hutch.api.store.pagination import Cursor
from hutch.api.store.tables import sandbox_metadata, sandboxes
from hutch.shared.ids import NodeID, SandboxID, TeamID, TemplateID


def sandbox_values(sandbox_id: SandboxID, new: NewSandbox) -> dict[str, Any]:
    """The ``sandboxes`` row for a new sandbox."""
    return {
        "id": sandbox_id,
        "team_id": new.team_id,
        "template_id": new.template_id,
        "alias": new.alias,
        "state": new.state.value,
        "cpu_count": new.cpu_count,
        "memory_mb": new.memory_mb,
        "disk_mb": new.disk_mb,
        "started_at": new.started_at,
        "end_at": new.end_at,
        "envd_access_token": new.envd_access_token,
        "envd_version": new.envd_version,
        "node_id": new.node_id,
        "address": new.address,
        "auto_pause": new.auto_pause,
        "allow_internet": new.allow_internet,
        "env_vars": json.dumps(dict(new.env_vars), sort_keys=True),
        "version": 1,
        "auto_resume": new.auto_resume,
        "timeout_s": new.timeout_s,
        "template_build_id": new.template_build_id,
        "auto_pause_memory": new.auto_pause_memory,
        "network": json.dumps(new.network.to_json(), sort_keys=True),
        "traffic_access_token": new.traffic_access_token,
    }


def metadata_values(sandbox_id: SandboxID, metadata: Mapping[str, str]) -> list[dict[str, str]]:
    """The ``sandbox_metadata`` rows for ``metadata``."""
    return [{"sandbox_id": sandbox_id, "key": k, "value": v} for k, v in metadata.items()]


def row_to_sandbox(row: Any, metadata: Mapping[str, str]) -> Sandbox:
    """A :class:`Sandbox` from a ``sandboxes`` row and its metadata map."""
    return Sandbox(
        id=SandboxID(row.id),
        team_id=TeamID(row.team_id),
        template_id=TemplateID(row.template_id),
        alias=row.alias,
        state=SandboxState(row.state),
        metadata=dict(metadata),
        env_vars=json.loads(row.env_vars),
        cpu_count=row.cpu_count,
        memory_mb=row.memory_mb,
        disk_mb=row.disk_mb,
        started_at=row.started_at,
        end_at=row.end_at,
        envd_access_token=row.envd_access_token,
        envd_version=row.envd_version,
        node_id=NodeID(row.node_id) if row.node_id is not None else None,
        address=row.address,
        auto_pause=bool(row.auto_pause),
        auto_pause_memory=bool(row.auto_pause_memory),
        allow_internet=bool(row.allow_internet),
        pause_mode=row.pause_mode,
        template_build_id=row.template_build_id,
        killed_reason=row.killed_reason,
        auto_resume=bool(row.auto_resume),
        timeout_s=row.timeout_s,
        version=row.version,
        network=NetworkConfig.from_json(json.loads(row.network) if row.network else None),
        traffic_access_token=row.traffic_access_token,
    )


async def load_metadata(
    conn: AsyncConnection, sandbox_ids: Iterable[str]
) -> dict[str, dict[str, str]]:
    """The metadata maps of ``sandbox_ids`` (every id present, maps possibly empty)."""
    ids = list(sandbox_ids)
    found: dict[str, dict[str, str]] = {i: {} for i in ids}
    if not ids:
        return found
    query = (
        select(sandbox_metadata.c.sandbox_id, sandbox_metadata.c.key, sandbox_metadata.c.value)
        .where(sandbox_metadata.c.sandbox_id.in_(ids))
        .order_by(sandbox_metadata.c.sandbox_id, sandbox_metadata.c.key)
    )
    for sandbox_id, key, value in await conn.execute(query):
        found[sandbox_id][key] = value
    return found


async def rows_to_sandboxes(conn: AsyncConnection, rows: Iterable[Any]) -> list[Sandbox]:
    """Sandboxes for ``sandboxes`` rows, with their metadata loaded in one query."""
    rows = list(rows)
    metadata = await load_metadata(conn, (r.id for r in rows))
    return [row_to_sandbox(r, metadata[r.id]) for r in rows]


def scoped(query: Select[Any], sandbox_id: str, team_id: TeamID | None) -> Select[Any]:
    """``query`` restricted to one sandbox, and to one team unless ``team_id`` is None."""
    query = query.where(sandboxes.c.id == sandbox_id)
    if team_id is not None:
        query = query.where(sandboxes.c.team_id == team_id)
    return query


async def fetch_sandbox(
    conn: AsyncConnection, sandbox_id: str, *, team_id: TeamID | None
) -> Sandbox | None:
    """The sandbox, within ``conn``'s transaction, or ``None``."""
    row = (await conn.execute(scoped(select(sandboxes), sandbox_id, team_id))).first()
    if row is None:
        return None
    metadata = await load_metadata(conn, [row.id])
    return row_to_sandbox(row, metadata[row.id])


def listing_query(
    *,
    team_id: TeamID,
    states: Collection[SandboxState] | None,
    metadata: Mapping[str, str] | None,
    started_after: datetime | None,
    template: str | None,
    order: SortOrder,
    after: Cursor | None,
    limit: int | None,
) -> Select[Any]:
    """The listing's SELECT: filters AND-ed, keyset-paginated on ``(started_at, id)``."""
    s = sandboxes.c
    query = select(sandboxes).where(s.team_id == team_id)
    if states is not None:
        query = query.where(s.state.in_([st.value for st in states]))
    if started_after is not None:
        # At or after, as infra's list (``sandbox_started_at >= @started_after``): a
        # client feeding a sandbox's own ``startedAt`` back must get that sandbox. Both
        # sides sit on the microsecond grid (the column and Python's datetime).
        query = query.where(s.started_at >= started_after)
    if template is not None:
        query = query.where(or_(s.template_id == template, s.alias == template))
    for key, value in (metadata or {}).items():
        # One EXISTS per pair: portable, uses (key, value) and the primary key, and the
        # values are bound parameters, so '&', '=', '%' and unicode need no escaping.
        m = sandbox_metadata.c
        query = query.where(exists().where(m.sandbox_id == s.id, m.key == key, m.value == value))
    if after is not None:
        if order is SortOrder.ASC:
            query = query.where(
                or_(
                    s.started_at > after.started_at,
                    and_(s.started_at == after.started_at, s.id > after.sandbox_id),
                )
            )
        else:
            query = query.where(
                or_(
                    s.started_at < after.started_at,
                    and_(s.started_at == after.started_at, s.id < after.sandbox_id),
                )
            )
    if order is SortOrder.ASC:
        query = query.order_by(s.started_at.asc(), s.id.asc())
    else:
        query = query.order_by(s.started_at.desc(), s.id.desc())
    return query.limit(limit) if limit is not None else query
