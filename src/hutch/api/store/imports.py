"""Template imports from OCI images as jobs (issue 11, ADR 0030): the ``template_imports`` table.

An import is queued (``queued``) by the api that took the request, claimed by one api's
worker (``running``, ``worker`` set, a lease until ``lease_expires_at``), and finished
(``ready`` with its result, or ``error`` with the status and message a plain request
answers). :meth:`claim` takes the oldest queued import, or a running one whose lease
ended (its worker died or was cut off), with ``SELECT … FOR UPDATE SKIP LOCKED`` on
PostgreSQL, so concurrent workers never take the same one; on SQLite ``BEGIN IMMEDIATE``
serialises them. Every write of a running import is a compare-and-set on its worker: a
worker whose lease was taken over cannot write progress or an outcome any more, so the
template row is written exactly once. An import claimed ``max_attempts`` times without
ending is failed instead of claimed again.

Leases use the store's clock (PostgreSQL ``now()``), as nodes' leases do (ADR 0025).
:meth:`add` sends ``NOTIFY hutch_template_imports`` on PostgreSQL in its transaction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import or_, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from hutch.api.models import NewTemplate, Template
from hutch.api.store.artifacts import upsert_holding
from hutch.api.store.base import Clock, utc_now
from hutch.api.store.engine import is_sqlite, read_transaction, write_transaction
from hutch.api.store.errors import is_unique_violation
from hutch.api.store.nodes import store_now
from hutch.api.store.tables import template_imports, templates
from hutch.api.store.templates import _template
from hutch.shared.errors import AlreadyExistsError
from hutch.shared.ids import NodeID

#: The channel queued imports are announced on (PostgreSQL).
IMPORTS_CHANNEL: Final = "hutch_template_imports"
#: The states a name is taken in (the partial unique index's).
ACTIVE: Final = ("queued", "running")


@dataclass(frozen=True, slots=True, kw_only=True)
class ImportRecord:
    """An import's row."""

    import_id: str
    team_id: str
    name: str
    status: str
    request: dict[str, Any]
    worker: str | None
    attempts: int
    lease_expires_at: datetime | None
    #: stage → (done, total), the latest of each stage reported.
    progress: dict[str, tuple[int, int]]
    result: dict[str, Any] | None
    error_status: int | None
    error_message: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.status in ("ready", "error")


def _record(row: Any) -> ImportRecord:
    return ImportRecord(
        import_id=row.id,
        team_id=row.team_id,
        name=row.name,
        status=row.status,
        request=json.loads(row.request),
        worker=row.worker,
        attempts=row.attempts,
        lease_expires_at=row.lease_expires_at,
        progress={k: (int(v[0]), int(v[1])) for k, v in json.loads(row.progress).items()},
        result=json.loads(row.result) if row.result is not None else None,
        error_status=row.error_status,
        error_message=row.error_message,
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
    )


def _progress(progress: dict[str, tuple[int, int]]) -> str:
    return json.dumps({k: [d, t] for k, (d, t) in progress.items()})


class SqlImportStore:
    """Template import jobs on SQL."""

    def __init__(self, engine: AsyncEngine, *, clock: Clock = utc_now) -> None:
        self._engine = engine
        self._clock = clock

    async def add(
        self, *, import_id: str, team_id: str, name: str, request: dict[str, Any]
    ) -> ImportRecord:
        """Queue an import; ``AlreadyExistsError`` while another import of ``name`` is
        queued or running."""
        try:
            async with write_transaction(self._engine) as conn:
                now = await store_now(conn, self._clock)
                await conn.execute(
                    template_imports.insert().values(
                        id=import_id, team_id=team_id, name=name, status="queued",
                        request=json.dumps(request), attempts=0, progress="{}",
                        created_at=now, updated_at=now,
                    )
                )  # fmt: skip
                if not is_sqlite(conn):
                    await conn.execute(
                        text("SELECT pg_notify(:channel, :payload)"),
                        {"channel": IMPORTS_CHANNEL, "payload": import_id},
                    )
        except IntegrityError as exc:
            if is_unique_violation(exc):
                raise AlreadyExistsError(
                    f"template {name!r} is being imported already; wait for that import"
                ) from exc
            raise
        found = await self.find(import_id)
        assert found is not None
        return found

    async def find(self, import_id: str) -> ImportRecord | None:
        async with read_transaction(self._engine) as conn:
            row = (
                await conn.execute(
                    select(template_imports).where(template_imports.c.id == import_id)
                )
            ).first()
        return _record(row) if row is not None else None

    async def claim(
        self,
        worker: str,
        *,
        lease_s: float,
        max_attempts: int,
        take_over_all: bool = False,
    ) -> tuple[ImportRecord | None, list[ImportRecord]]:
        """The oldest queued import, or running one whose lease ended, now ``worker``'s for
        ``lease_s``; and the imports failed on the way because they had been claimed
        ``max_attempts`` times already. ``take_over_all``: every running import not
        ``worker``'s counts as ended (SQLite's one api at start: they are its previous
        run's)."""
        failed: list[ImportRecord] = []
        while True:
            async with write_transaction(self._engine) as conn:
                now = await store_now(conn, self._clock)
                c = template_imports.c
                ended = c.status == "running"
                if take_over_all:
                    ended = ended & (c.worker != worker)
                else:
                    ended = ended & (c.lease_expires_at < now)
                query = (
                    select(template_imports)
                    .where(or_(c.status == "queued", ended))
                    .order_by(c.created_at)
                    .limit(1)
                )
                if not is_sqlite(conn):
                    query = query.with_for_update(skip_locked=True)
                row = (await conn.execute(query)).first()
                if row is None:
                    return None, failed
                if row.status == "running" and row.attempts >= max_attempts:
                    message = (
                        f"the import was started {row.attempts} times and each time the api "
                        f"running it stopped (last worker {row.worker}, its lease ended "
                        f"{row.lease_expires_at:%Y-%m-%dT%H:%M:%SZ}); start the import again"
                    )
                    await conn.execute(
                        template_imports.update()
                        .where(c.id == row.id)
                        .values(
                            status="error",
                            error_status=503,
                            error_message=message,
                            updated_at=now,
                            finished_at=now,
                        )
                    )
                    failed.append(await self._read(conn, row.id))
                    continue
                await conn.execute(
                    template_imports.update()
                    .where(c.id == row.id)
                    .values(
                        status="running", worker=worker, attempts=row.attempts + 1,
                        lease_expires_at=now + timedelta(seconds=lease_s), updated_at=now,
                    )
                )  # fmt: skip
                return await self._read(conn, row.id), failed

    async def _read(self, conn: AsyncConnection, import_id: str) -> ImportRecord:
        row = (
            await conn.execute(select(template_imports).where(template_imports.c.id == import_id))
        ).one()
        return _record(row)

    def _mine(self, import_id: str, worker: str) -> Any:
        c = template_imports.c
        return (c.id == import_id) & (c.worker == worker) & (c.status == "running")

    async def heartbeat(
        self,
        import_id: str,
        worker: str,
        *,
        lease_s: float,
        progress: dict[str, tuple[int, int]] | None = None,
    ) -> bool:
        """Renew the lease (and write ``progress``); False when the import is no longer
        ``worker``'s (taken over, or ended)."""
        async with write_transaction(self._engine) as conn:
            now = await store_now(conn, self._clock)
            values: dict[str, Any] = {"lease_expires_at": now + timedelta(seconds=lease_s)}
            if progress is not None:
                values.update(progress=_progress(progress), updated_at=now)
            done = await conn.execute(
                template_imports.update().where(self._mine(import_id, worker)).values(**values)
            )
            return bool(done.rowcount)

    async def release(self, import_id: str, worker: str) -> bool:
        """Give a running import back to the queue (its api is stopping): the next worker
        claims it at once instead of after the lease."""
        async with write_transaction(self._engine) as conn:
            now = await store_now(conn, self._clock)
            done = await conn.execute(
                template_imports.update()
                .where(self._mine(import_id, worker))
                .values(status="queued", worker=None, lease_expires_at=None, updated_at=now)
            )
            return bool(done.rowcount)

    async def finish_ready(
        self,
        import_id: str,
        worker: str,
        *,
        template: NewTemplate,
        result: dict[str, Any],
        progress: dict[str, tuple[int, int]],
        holder: NodeID | None = None,
    ) -> Template | None:
        """In one transaction: the import ``ready``, its template's row written and, with
        ``holder`` (a cluster's node that imported it), that node recorded as the
        artifact's holder (ADR 0029), so a create on any node fetches it from there.
        ``None`` when the import is no longer ``worker``'s (nothing written);
        ``AlreadyExistsError`` when the name was taken meanwhile (nothing written)."""
        try:
            async with write_transaction(self._engine) as conn:
                now = await store_now(conn, self._clock)
                done = await conn.execute(
                    template_imports.update()
                    .where(self._mine(import_id, worker))
                    .values(
                        status="ready", result=json.dumps(result), progress=_progress(progress),
                        lease_expires_at=None, updated_at=now, finished_at=now,
                    )
                )  # fmt: skip
                if done.rowcount != 1:
                    return None
                row_id = template.id or template.alias
                await conn.execute(
                    templates.insert().values(
                        id=row_id, team_id=template.team_id, alias=template.alias,
                        build_state=template.build_state.value, cpu_count=template.cpu_count,
                        memory_mb=template.memory_mb, disk_mb=template.disk_mb,
                        envd_version=template.envd_version, public=template.public,
                        created_at=now, updated_at=now,
                    )
                )  # fmt: skip
                if holder is not None:
                    await upsert_holding(conn, template.alias, holder, now=now)
                row = (await conn.execute(select(templates).where(templates.c.id == row_id))).one()
                return _template(row)
        except IntegrityError as exc:
            if is_unique_violation(exc):
                raise AlreadyExistsError(f"template {template.alias!r} already exists") from exc
            raise

    async def finish_error(
        self,
        import_id: str,
        worker: str | None,
        *,
        status: int,
        message: str,
        progress: dict[str, tuple[int, int]] | None = None,
    ) -> bool:
        """End the import ``error``; False when it is not ``worker``'s (``None``: whoever's,
        queued or running) or ended already."""
        c = template_imports.c
        cond = (
            self._mine(import_id, worker)
            if worker is not None
            else (c.id == import_id) & c.status.in_(ACTIVE)
        )
        async with write_transaction(self._engine) as conn:
            now = await store_now(conn, self._clock)
            values: dict[str, Any] = {
                "status": "error", "error_status": status, "error_message": message,
                "lease_expires_at": None, "updated_at": now, "finished_at": now,
            }  # fmt: skip
            if progress is not None:
                values["progress"] = _progress(progress)
            done = await conn.execute(template_imports.update().where(cond).values(**values))
            return bool(done.rowcount)
