"""Template imports from OCI images as jobs in the store (issue 11, ADR 0030).

``POST /templates/from-image`` queues an import (:meth:`TemplateImportService.submit`);
an :class:`~hutch.api.service.import_jobs.ImportWorker` of any api that can import claims
it and runs it on a node (:meth:`TemplateImportService.execute`), writing its progress to
the row; the api that took the request, or any other (``GET /templates/imports/{id}``),
follows the row to its end (:meth:`TemplateImportService.follow`). The template's row is
written in the transaction that ends the import ``ready``, by the worker that still holds
its lease, so an import is published once even when a worker that was cut off comes back.

A claimed import is a lease: a worker that dies stops renewing it and another worker
takes the import over. The node's import is idempotent by fingerprint and serialised per
name (``node/templates/manager.py``), so a take-over re-runs at worst the part the node
had not finished (and waits for the cut-off run on the same node). An import whose
workers kept dying is failed with that reason after ``max_attempts`` claims.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from hutch.api import metrics
from hutch.api.models import NewTemplate, Template, TemplateBuildState
from hutch.api.service.ports import ImageImport, ImportedImage, TemplateBuilder
from hutch.api.store.base import TemplateStore
from hutch.shared.errors import (
    AlreadyExistsError,
    HutchError,
    NotFoundError,
    UnavailableError,
    http_status,
)
from hutch.shared.ids import NodeID, TeamID, TemplateID

log = logging.getLogger("hutch.api.template_imports")


class ImportJobs(Protocol):
    """The jobs table (``store/imports.SqlImportStore``)."""

    async def add(
        self, *, import_id: str, team_id: str, name: str, request: dict[str, Any]
    ) -> Any: ...
    async def find(self, import_id: str) -> Any: ...
    async def claim(
        self, worker: str, *, lease_s: float, max_attempts: int, take_over_all: bool = False
    ) -> tuple[Any, list[Any]]: ...
    async def heartbeat(
        self, import_id: str, worker: str, *, lease_s: float,
        progress: dict[str, tuple[int, int]] | None = None,
    ) -> bool: ...  # fmt: skip
    async def release(self, import_id: str, worker: str) -> bool: ...
    async def finish_ready(
        self, import_id: str, worker: str, *, template: NewTemplate, result: dict[str, Any],
        progress: dict[str, tuple[int, int]], holder: NodeID | None = None,
    ) -> Template | None: ...  # fmt: skip
    async def finish_error(
        self, import_id: str, worker: str | None, *, status: int, message: str,
        progress: dict[str, tuple[int, int]] | None = None,
    ) -> bool: ...  # fmt: skip


@dataclasses.dataclass(frozen=True, slots=True)
class ImportPolicy:
    """How imports are leased and followed."""

    #: A claim holds this long without a heartbeat (``HUTCH_IMPORT_LEASE_S``).
    lease_s: float = 30.0
    #: Claims of one import before it is failed (its workers kept dying).
    max_attempts: int = 3
    #: How often a running import's progress is written (and its lease renewed).
    heartbeat_s: float = 1.0
    #: How often a follower reads the row.
    follow_s: float = 0.2


def _request_dict(request: ImageImport) -> dict[str, Any]:
    return dataclasses.asdict(request)


def _template_of(request: ImageImport, team_id: str) -> NewTemplate:
    return NewTemplate(
        team_id=TeamID(team_id),
        id=TemplateID(request.name),
        alias=request.name,
        build_state=TemplateBuildState.READY,
        # The row's cpu is an integer (E2B's cpuCount); the node keeps the fraction.
        cpu_count=max(1, math.ceil(request.cpu_count)),
        memory_mb=request.memory_mb,
        **({"disk_mb": request.disk_mb} if request.disk_mb else {}),
    )


class TemplateImportService:
    """Import bookkeeping over the store's jobs and a :class:`TemplateBuilder`."""

    def __init__(
        self,
        *,
        templates: TemplateStore,
        jobs: ImportJobs,
        builder: TemplateBuilder | None,
        policy: ImportPolicy | None = None,
    ) -> None:
        self._templates = templates
        self.jobs = jobs
        self._builder = builder
        self.policy = policy or ImportPolicy()
        #: Called after an import is queued (this api's worker claims it at once).
        self.on_queued: Callable[[], None] | None = None

    @property
    def can_import(self) -> bool:
        return self._builder is not None

    def _require_builder(self) -> TemplateBuilder:
        if self._builder is None:
            raise UnavailableError("this server cannot build templates (no builder configured)")
        return self._builder

    async def submit(self, request: ImageImport, *, team_id: TeamID) -> Any:
        """Queue the import of ``request.source`` as template ``request.name`` of
        ``team_id``. ``AlreadyExistsError`` when the name is taken (by any team: aliases
        are global) or being imported."""
        self._require_builder()
        if await self._templates.find_template_any_team(request.name) is not None:
            raise AlreadyExistsError(f"template {request.name!r} already exists")
        record = await self.jobs.add(
            import_id=f"imp-{uuid.uuid4().hex}", team_id=team_id, name=request.name,
            request=_request_dict(request),
        )  # fmt: skip
        if self.on_queued is not None:
            self.on_queued()
        return record

    async def get(self, import_id: str, *, team_id: TeamID) -> Any:
        """The import's row if it is ``team_id``'s; ``NotFoundError`` otherwise."""
        record = await self.jobs.find(import_id)
        if record is None or record.team_id != team_id:
            raise NotFoundError(f"import {import_id} not found")
        return record

    async def follow(self, import_id: str, *, team_id: TeamID) -> AsyncIterator[Any]:
        """The import's row each time it changed, until (and including) its end."""
        seen: Any = None
        while True:
            record = await self.get(import_id, team_id=team_id)
            if seen is None or record.updated_at != seen.updated_at or record.finished:
                seen = record
                yield record
            if record.finished:
                return
            await asyncio.sleep(self.policy.follow_s)

    async def template_of(self, record: Any) -> Template | None:
        """The template a ready import made (``None`` once deleted)."""
        return await self._templates.find_template(record.name, team_id=TeamID(record.team_id))

    async def execute(self, record: Any, *, worker: str) -> None:
        """Run an import this api's worker claimed, to its end (row, template row)."""
        builder = self._require_builder()
        request = ImageImport(**record.request)
        progress: dict[str, tuple[int, int]] = dict(record.progress)
        lease_s = self.policy.lease_s

        def note(stage: str, done: int, total: int) -> None:
            progress[stage] = (done, total)

        async def heartbeat() -> None:
            written: dict[str, tuple[int, int]] | None = None
            while True:
                await asyncio.sleep(self.policy.heartbeat_s)
                changed = dict(progress) if progress != written else None
                with contextlib.suppress(Exception):  # the next beat tries again
                    if not await self.jobs.heartbeat(
                        record.import_id, worker, lease_s=lease_s, progress=changed
                    ):
                        log.warning("import %s: no longer %s's (taken over)",
                                    record.import_id, worker)  # fmt: skip
                        return
                    if changed is not None:
                        written = changed

        beat = asyncio.create_task(heartbeat(), name=f"import-beat-{record.import_id}")
        started = time.perf_counter()
        imported: ImportedImage | None = None
        failure: tuple[int, str] | None = None
        outcome = "ok"
        try:
            imported = await builder.import_image(request, progress=note)
        except HutchError as exc:
            failure = (http_status(exc), exc.public_message)
            outcome = metrics.outcome_of(exc)
        except Exception as exc:  # an import must always end in a status
            log.exception("import %s crashed", record.import_id)
            failure = (500, f"internal error: {exc!r}")
            outcome = metrics.outcome_of(exc)
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
        if imported is not None:
            result = {
                "fingerprint": imported.fingerprint, "cacheHit": imported.cache_hit,
                "envdInjected": imported.envd_injected, "envdSHA256": imported.envd_sha256,
            }  # fmt: skip
            try:
                made = await self.jobs.finish_ready(
                    record.import_id, worker, template=_template_of(request, record.team_id),
                    result=result, progress=progress, holder=imported.node_id,
                )  # fmt: skip
            except AlreadyExistsError as exc:  # a build or an import took the name meanwhile
                failure = (409, exc.public_message)
                outcome = metrics.outcome_of(exc)
            else:
                if made is None:  # taken over: the other worker publishes it
                    log.warning("import %s: lost its lease before it ended", record.import_id)
                    return
        if failure is not None:
            await self.jobs.finish_error(
                record.import_id, worker, status=failure[0], message=failure[1],
                progress=progress,
            )  # fmt: skip
        metrics.record_build("import", outcome, time.perf_counter() - started)
