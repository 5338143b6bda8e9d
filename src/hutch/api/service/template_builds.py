"""E2B SDK template builds: request a build, upload files, start it, poll its status.

The flow the SDK drives (``e2b/template_sync/build_api.py``): ``POST /v3/templates``
(:meth:`request_build`) → per COPY step ``GET /templates/{id}/files/{hash}`` and a ``PUT``
to the returned URL → ``POST /v2/templates/{id}/builds/{buildID}`` (:meth:`start_build`)
→ ``GET /templates/{id}/builds/{buildID}/status?logsOffset=N`` until ready or error.

Builds are **jobs in the store** (ADR 0024, ``store/builds.py``): the request, the start,
the status, the log lines and the failure reason are rows, so any api answers a build's
status and logs. Starting a build only records it; a :class:`~hutch.api.service.
template_jobs.BuildWorker` (one per api that can build) claims it and runs it here
(:meth:`execute`). A build whose worker died is failed with that reason, never run twice.
The template's row goes ``waiting`` → ``building`` → ``ready``; a failed rebuild leaves it
``ready`` (the previous version still serves), a failed first build ``error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from hutch.api import metrics
from hutch.api.models import NewTemplate, Template, TemplateBuildState
from hutch.api.service.ports import BuildFailedError, BuildRunner
from hutch.api.service.quotas import QuotaService, check_builds
from hutch.api.service.template_tags import (
    DEFAULT_TAG,
    TemplateTagService,
    check_tags,
    split_tag,
)
from hutch.api.store.base import TemplateStore
from hutch.shared.errors import HutchError, InvalidArgumentError, NotFoundError
from hutch.shared.ids import NodeID, TeamID, TemplateID, template_version_name

log = logging.getLogger("hutch.api.template_builds")


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One build log line (E2B's ``BuildLogEntry``)."""

    timestamp: datetime
    level: str
    message: str
    step: str | None = None


@dataclass
class Build:
    """A build of one template, as the status endpoint reports it (read from the store)."""

    build_id: str
    template_id: TemplateID
    team_id: TeamID
    cpu_count: int
    memory_mb: int
    first: bool
    status: str = "waiting"
    entries: list[Any] = field(default_factory=list)
    reason: str | None = None
    reason_step: str | None = None
    #: Recorded when the build succeeds (``default`` when the request named none).
    tags: list[str] = field(default_factory=list)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None


class BuildJobs(Protocol):
    """The jobs table (``store/builds.SqlBuildStore``)."""

    async def add_build(
        self, *, build_id: str, template_id: str, team_id: str, cpu_count: int,
        memory_mb: int, first: bool, tags: Sequence[str],
    ) -> Any: ...  # fmt: skip
    async def find_build(self, build_id: str) -> Any: ...
    async def builds_of(self, template_id: str, *, team_id: str) -> list[Any]: ...
    async def start(self, build_id: str, start: dict[str, Any]) -> Any: ...
    async def claim(self, worker: str) -> Any: ...
    async def heartbeat(self, build_id: str, worker: str) -> bool: ...
    async def append_lines(self, build_id: str, lines: Sequence[Any]) -> None: ...
    async def lines(
        self, build_id: str, *, offset: int = 0, limit: int | None = None
    ) -> list[Any]: ...
    async def finish(
        self, build_id: str, *, status: str, worker: str | None,
        reason: str | None = None, reason_step: str | None = None,
        holder: NodeID | None = None, artifacts: Sequence[str] = (),
    ) -> bool: ...  # fmt: skip
    async def orphans(self, *, heartbeat_before: datetime) -> list[Any]: ...
    async def count_building(self, team_id: str) -> int: ...
    async def open_builds(self, team_id: str) -> list[Any]: ...
    async def cancel(self, build_id: str, *, reason: str) -> bool: ...


def _view(record: Any, entries: list[Any]) -> Build:
    return Build(
        build_id=record.build_id,
        template_id=TemplateID(record.template_id),
        team_id=TeamID(record.team_id),
        cpu_count=record.cpu_count,
        memory_mb=record.memory_mb,
        first=record.first,
        status=record.status,
        entries=entries,
        reason=record.reason,
        reason_step=record.reason_step,
        tags=list(record.tags),
        created_at=record.created_at,
        updated_at=record.updated_at,
        finished_at=record.finished_at,
    )


def split_name(name: str) -> tuple[str, list[str]]:
    """``"name:tag"`` → ``("name", ["tag"])`` (E2B names may carry one tag)."""
    base, tag = split_tag(name)
    return base, [tag] if tag else []


#: How often a running build's new log lines are written to the store.
_FLUSH_EVERY_S = 0.2


class TemplateBuildService:
    """Build bookkeeping over the store's jobs and a :class:`BuildRunner`."""

    def __init__(
        self,
        *,
        templates: TemplateStore,
        runner: BuildRunner | None,
        jobs: BuildJobs,
        quotas: QuotaService | None = None,
        upload_tokens: UploadTokens | None = None,
    ) -> None:
        self._quotas = quotas
        self._templates = templates
        self._runner = runner
        self.jobs = jobs
        #: Signs and checks the upload URLs; its key is shared by every api (the store's,
        #: or the settings'), so any api accepts a URL another one handed out.
        self.upload_tokens = upload_tokens if upload_tokens is not None else UploadTokens()
        #: Called after a build is started (this api's worker claims it at once).
        self.on_started: Callable[[], None] | None = None

    @property
    def runner(self) -> BuildRunner:
        """The runner; ``InvalidArgumentError`` when this server cannot build."""
        if self._runner is None:
            raise InvalidArgumentError("this server does not build templates")
        return self._runner

    @property
    def can_build(self) -> bool:
        return self._runner is not None

    async def request_build(
        self,
        *,
        team_id: TeamID,
        name: str,
        cpu_count: int | None,
        memory_mb: int | None,
        tags: list[str] | None = None,
    ) -> tuple[Template, Build, list[str]]:
        """A new build of template ``name[:tag]`` (created ``waiting`` when new), to be
        tagged with ``tags`` and the name's tag (``default`` when none)."""
        self.runner  # noqa: B018 - fail early on a server that cannot build
        base, named = split_name(name)
        tags = check_tags([*named, *(tags or [])]) or [DEFAULT_TAG]
        existing = await self._templates.find_template_any_team(base)
        if existing is not None and existing.team_id != team_id:
            from hutch.shared.errors import AlreadyExistsError

            raise AlreadyExistsError(f"template name {base!r} is taken")
        if existing is None:
            existing = await self._templates.create_template(
                NewTemplate(
                    team_id=team_id,
                    id=TemplateID(base),
                    alias=base,
                    build_state=TemplateBuildState.WAITING,
                    cpu_count=max(1, math.ceil(cpu_count or 2)),
                    memory_mb=memory_mb or 1024,
                )
            )
            first = True
        else:
            first = existing.build_state is not TemplateBuildState.READY
        record = await self.jobs.add_build(
            build_id=str(uuid.uuid4()),
            template_id=existing.id,
            team_id=team_id,
            cpu_count=int(cpu_count or existing.cpu_count),
            memory_mb=memory_mb or existing.memory_mb,
            first=first,
            tags=tags,
        )
        return existing, _view(record, []), tags

    async def get_build(self, template_id: str, build_id: str, *, team_id: TeamID) -> Build:
        """The build with its log lines, if it is ``team_id``'s; ``NotFoundError`` otherwise."""
        record = await self.jobs.find_build(build_id)
        if record is None or record.template_id != template_id or record.team_id != team_id:
            raise NotFoundError(f"build {build_id} of template {template_id} not found")
        return _view(record, await self.jobs.lines(build_id))

    async def builds_of(self, template_id: str, *, team_id: TeamID) -> list[Build]:
        """The team's builds of ``template_id``, newest first (without their log lines)."""
        return [_view(r, []) for r in await self.jobs.builds_of(template_id, team_id=team_id)]

    async def running_builds(self, team_id: TeamID) -> int:
        """How many of the team's builds are running (started, not ended), in any api."""
        return await self.jobs.count_building(team_id)

    async def cancel_team_builds(self, team_id: TeamID, *, reason: str) -> tuple[int, int]:
        """End every pending (requested, or started and not claimed) and running build of
        the team as ``error`` with ``reason``; a running one's worker stops its run at its
        next heartbeat. The template row goes as for an orphan (a first build's ``error``,
        a rebuild's ``ready``). ``(cancelled, failed)``; one that ended meanwhile is
        neither."""
        cancelled = failed = 0
        for record in await self.jobs.open_builds(team_id):
            try:
                if not await self.jobs.cancel(record.build_id, reason=reason):
                    continue
                await self.jobs.append_lines(
                    record.build_id,
                    [LogEntry(datetime.now(UTC), "error", f"Build cancelled: {reason}")],
                )
                if record.first:
                    with contextlib.suppress(NotFoundError):
                        await self._templates.set_build_state(
                            TemplateID(record.template_id), TemplateBuildState.ERROR
                        )
                cancelled += 1
            except Exception:
                log.exception("build %s: cancelling failed", record.build_id)
                failed += 1
        return cancelled, failed

    async def get_own_template(self, template_id: str, *, team_id: TeamID) -> Template:
        """The team's template ``template_id``; ``NotFoundError`` otherwise."""
        found = await self._templates.find_template(template_id, team_id=team_id)
        if found is None or found.team_id != team_id:
            raise NotFoundError(f"template {template_id!r} not found")
        return found

    async def start_build(
        self, template_id: str, build_id: str, start: Mapping[str, Any], *, team_id: TeamID
    ) -> Build:
        """Record the start; a worker (of any api that builds) claims and runs it."""
        build = await self.get_build(template_id, build_id, team_id=team_id)
        start = dict(start)
        from_template = start.get("fromTemplate")
        if isinstance(from_template, str) and from_template:
            # "name:tag" (and "name", meaning its default tag) → that build's kept version.
            base, kept = await TemplateTagService(templates=self._templates).resolve(
                from_template, team_id=team_id
            )
            start["fromTemplate"] = template_version_name(base, kept) if kept else base
        if self._quotas is not None:
            # maxConcurrentBuilds over every api's builds (the store's count); two starts
            # racing through different apis may both pass it by one.
            limit = await self._quotas.build_limit(team_id)
            check_builds(team_id, await self.running_builds(team_id), limit)
        record = await self.jobs.start(build.build_id, start)  # AlreadyExists when started
        await self._templates.set_build_state(build.template_id, TemplateBuildState.BUILDING)
        if self.on_started is not None:
            self.on_started()
        return _view(record, build.entries)

    async def execute(self, record: Any, *, worker: str) -> None:
        """Run a build this api's worker claimed, to its end (status, logs, template row)."""
        pending: list[LogEntry] = []

        def add(level: str, message: str, step: str | None = None) -> None:
            pending.append(LogEntry(datetime.now(UTC), level, message, step))

        stop = asyncio.Event()

        async def flush() -> None:
            # Taken off the buffer only once written (one writer at a time: the flusher,
            # then the final flush after it has stopped).
            count = len(pending)
            await self.jobs.append_lines(record.build_id, pending[:count])
            del pending[:count]

        async def flusher() -> None:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), _FLUSH_EVERY_S)
                await flush()

        add("info", f"Building template {record.template_id} (build {record.build_id})")
        flushing = asyncio.create_task(flusher(), name=f"build-logs-{record.build_id}")
        reason: str | None = None
        reason_step: str | None = None
        ended_elsewhere = False
        holder: NodeID | None = None
        started = time.perf_counter()
        try:
            holder = await self.runner.run_build(
                TemplateID(record.template_id),
                dict(record.start or {}),
                cpu_count=record.cpu_count,
                memory_mb=record.memory_mb,
                log=add,
                build_id=record.build_id,
            )
            current = await self.jobs.find_build(record.build_id)
            # Cancelled (or failed as orphaned) meanwhile: it has its status; publish nothing.
            ended_elsewhere = current is not None and current.status != "building"
            if not ended_elsewhere:
                with contextlib.suppress(NotFoundError):  # the template was deleted meanwhile
                    await self._templates.set_tags(
                        TemplateID(record.template_id), list(record.tags), record.build_id
                    )
        except (BuildFailedError, HutchError) as exc:
            reason = exc.message
            reason_step = getattr(exc, "step", None)
            add("error", f"Build failed: {reason}", reason_step)
        except Exception as exc:  # the build must always end in a status
            log.exception("build %s crashed", record.build_id)
            reason = f"internal error: {exc!r}"
            add("error", f"Build failed: {reason}")
        else:
            add("info", f"Build finished (tags: {', '.join(record.tags)})")
        finally:
            stop.set()  # never cancelled mid-write: that would lose the batch it writes
            with contextlib.suppress(Exception):
                await flushing
        await flush()  # every line is in the store before the status says it ended
        if ended_elsewhere:
            return
        state = TemplateBuildState.READY
        if reason is not None and record.first:
            state = TemplateBuildState.ERROR
        # The row first: a client seeing "ready" creates sandboxes from it at once.
        with contextlib.suppress(NotFoundError):
            await self._templates.set_build_state(TemplateID(record.template_id), state)
        await self.jobs.finish(
            record.build_id,
            status="error" if reason is not None else "ready",
            worker=worker,
            reason=reason,
            reason_step=reason_step,
            **self._holding(record, holder if reason is None else None),
        )
        metrics.record_build("build", "ok" if reason is None else "error",
                             time.perf_counter() - started)  # fmt: skip

    @staticmethod
    def _holding(record: Any, holder: NodeID | None) -> dict[str, Any]:
        """``finish``'s holder arguments: the node that built it holds the template and its
        ``name@build`` version now (ADR 0029), so a create on another node fetches them."""
        if holder is None:
            return {}
        version = template_version_name(record.template_id, record.build_id)
        return {"holder": holder, "artifacts": (record.template_id, version)}

    async def fail_orphan(self, record: Any, reason: str) -> bool:
        """Fail a build whose worker stopped (it is not run again: ADR 0024)."""
        if not await self.jobs.finish(record.build_id, status="error", worker=record.worker,
                                      reason=reason):  # fmt: skip
            return False  # it finished (or was failed) meanwhile
        await self.jobs.append_lines(
            record.build_id, [LogEntry(datetime.now(UTC), "error", f"Build failed: {reason}")]
        )
        state = TemplateBuildState.ERROR if record.first else TemplateBuildState.READY
        with contextlib.suppress(NotFoundError):
            await self._templates.set_build_state(TemplateID(record.template_id), state)
        return True


#: The name of the upload-token key among the store's shared secrets.
UPLOAD_SECRET_NAME = "template-upload-token"


class UploadTokens:
    """Signs the file upload URLs handed to the SDK (it PUTs without an API key).

    The key comes from ``HUTCH_TEMPLATE_UPLOAD_SECRET`` or, by default, the store's
    ``cluster_secrets`` (made by the first api that starts): never from one process's
    memory, so an upload URL minted by one api is accepted by another (ADR 0024). Without
    a key (a test's bare service), a random one of this process."""

    def __init__(self, secret: bytes | None = None) -> None:
        import os

        self._secret = secret or os.urandom(32)

    def sign(self, template_id: str, files_hash: str) -> str:
        """The token for one upload."""
        import hashlib
        import hmac

        message = f"{template_id}\0{files_hash}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def check(self, template_id: str, files_hash: str, token: str) -> bool:
        """Whether ``token`` was made by :meth:`sign` for these."""
        import hmac

        return hmac.compare_digest(self.sign(template_id, files_hash), token)
