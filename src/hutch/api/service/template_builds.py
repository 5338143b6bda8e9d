"""E2B SDK template builds: request a build, upload files, start it, poll its status.

The flow the SDK drives (``e2b/template_sync/build_api.py``): ``POST /v3/templates``
(:meth:`request_build`) → per COPY step ``GET /templates/{id}/files/{hash}`` and a ``PUT``
to the returned URL → ``POST /v2/templates/{id}/builds/{buildID}`` (:meth:`start_build`)
→ ``GET /templates/{id}/builds/{buildID}/status?logsOffset=N`` until ready or error.

Builds run as tasks of this process; their state and logs are kept in memory (a restart
forgets running builds; the templates they published stay). The store's row goes
``waiting`` → ``building`` → ``ready``; a failed rebuild leaves the row ``ready`` (the
previous version still serves), a failed first build ``error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

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
from hutch.shared.errors import AlreadyExistsError, HutchError, InvalidArgumentError, NotFoundError
from hutch.shared.ids import TeamID, TemplateID, template_version_name

log = logging.getLogger("hutch.api.template_builds")


@dataclass
class LogEntry:
    """One build log line (E2B's ``BuildLogEntry``)."""

    timestamp: datetime
    level: str
    message: str
    step: str | None = None


@dataclass
class Build:
    """A build of one template, as the status endpoint reports it."""

    build_id: str
    template_id: TemplateID
    team_id: TeamID
    cpu_count: int
    memory_mb: int
    first: bool
    status: str = "waiting"
    entries: list[LogEntry] = field(default_factory=list)
    reason: str | None = None
    reason_step: str | None = None
    #: Recorded when the build succeeds (``default`` when the request named none).
    tags: list[str] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None


def split_name(name: str) -> tuple[str, list[str]]:
    """``"name:tag"`` → ``("name", ["tag"])`` (E2B names may carry one tag)."""
    base, tag = split_tag(name)
    return base, [tag] if tag else []


class TemplateBuildService:
    """Build bookkeeping over the store and a :class:`BuildRunner`."""

    def __init__(
        self,
        *,
        templates: TemplateStore,
        runner: BuildRunner | None,
        quotas: QuotaService | None = None,
        upload_tokens: UploadTokens | None = None,
    ) -> None:
        self._quotas = quotas
        self._templates = templates
        self._runner = runner
        self._builds: dict[str, Build] = {}
        #: Signs and checks the upload URLs; its key is shared by every api (the store's,
        #: or the settings'), so any api accepts a URL another one handed out.
        self.upload_tokens = upload_tokens if upload_tokens is not None else UploadTokens()

    @property
    def runner(self) -> BuildRunner:
        """The runner; ``InvalidArgumentError`` when this server cannot build."""
        if self._runner is None:
            raise InvalidArgumentError("this server does not build templates")
        return self._runner

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
        build = Build(
            build_id=str(uuid.uuid4()),
            template_id=existing.id,
            team_id=team_id,
            cpu_count=cpu_count or existing.cpu_count,
            memory_mb=memory_mb or existing.memory_mb,
            first=first,
            tags=tags,
        )
        self._builds[build.build_id] = build
        return existing, build, tags

    def get_build(self, template_id: str, build_id: str, *, team_id: TeamID) -> Build:
        """The build, if it is ``team_id``'s; ``NotFoundError`` otherwise."""
        build = self._builds.get(build_id)
        if build is None or build.template_id != template_id or build.team_id != team_id:
            raise NotFoundError(f"build {build_id} of template {template_id} not found")
        return build

    def running_builds(self, team_id: TeamID) -> int:
        """How many of the team's builds are running in this process."""
        return sum(
            1 for b in self._builds.values()
            if b.team_id == team_id and b.status == "building"
        )  # fmt: skip

    def builds_of(self, template_id: str, *, team_id: TeamID) -> list[Build]:
        """The team's builds of ``template_id`` this process ran or runs, newest first
        (builds are not kept across restarts)."""
        found = [b for b in self._builds.values()
                 if b.template_id == template_id and b.team_id == team_id]  # fmt: skip
        return sorted(found, key=lambda b: b.created_at, reverse=True)

    async def get_own_template(self, template_id: str, *, team_id: TeamID) -> Template:
        """The team's template ``template_id``; ``NotFoundError`` otherwise."""
        found = await self._templates.find_template(template_id, team_id=team_id)
        if found is None or found.team_id != team_id:
            raise NotFoundError(f"template {template_id!r} not found")
        return found

    async def start_build(
        self, template_id: str, build_id: str, start: Mapping[str, Any], *, team_id: TeamID
    ) -> Build:
        """Start the build as a task; it is polled through :meth:`get_build`."""
        build = self.get_build(template_id, build_id, team_id=team_id)
        if build.task is not None:
            raise AlreadyExistsError(f"build {build_id} was started already")
        start = dict(start)
        from_template = start.get("fromTemplate")
        if isinstance(from_template, str) and from_template:
            # "name:tag" (and "name", meaning its default tag) → that build's kept version.
            base, kept = await TemplateTagService(templates=self._templates).resolve(
                from_template, team_id=team_id
            )
            start["fromTemplate"] = template_version_name(base, kept) if kept else base
        if self._quotas is not None:
            # maxConcurrentBuilds: builds run in this process, and nothing awaits between
            # this count and the status below, so two starts cannot both take the last one.
            limit = await self._quotas.build_limit(team_id)
            check_builds(team_id, self.running_builds(team_id), limit)
        build.status = "building"
        build.updated_at = datetime.now(UTC)
        await self._templates.set_build_state(build.template_id, TemplateBuildState.BUILDING)
        build.task = asyncio.create_task(self._run(build, start), name=f"build-{build_id}")
        return build

    async def _run(self, build: Build, start: dict[str, Any]) -> None:
        def add(level: str, message: str, step: str | None = None) -> None:
            build.entries.append(LogEntry(datetime.now(UTC), level, message, step))

        add("info", f"Building template {build.template_id} (build {build.build_id})")
        started = time.perf_counter()
        try:
            await self.runner.run_build(
                build.template_id,
                start,
                cpu_count=build.cpu_count,
                memory_mb=build.memory_mb,
                log=add,
                build_id=build.build_id,
            )
            with contextlib.suppress(NotFoundError):  # the template was deleted meanwhile
                await self._templates.set_tags(build.template_id, build.tags, build.build_id)
        except (BuildFailedError, HutchError) as exc:
            message = exc.message
            build.reason = message
            build.reason_step = getattr(exc, "step", None)
            add("error", f"Build failed: {message}", build.reason_step)
            state = TemplateBuildState.ERROR if build.first else TemplateBuildState.READY
            final = "error"
        except Exception as exc:  # the build task must always end in a status
            log.exception("build %s crashed", build.build_id)
            build.reason = f"internal error: {exc!r}"
            add("error", f"Build failed: {build.reason}")
            state = TemplateBuildState.ERROR if build.first else TemplateBuildState.READY
            final = "error"
        else:
            add("info", f"Build finished (tags: {', '.join(build.tags)})")
            state = TemplateBuildState.READY
            final = "ready"
        # The row first: a client seeing "ready" creates sandboxes from it at once.
        with contextlib.suppress(NotFoundError):
            await self._templates.set_build_state(build.template_id, state)
        build.finished_at = build.updated_at = datetime.now(UTC)
        build.status = final
        metrics.record_build("build", "ok" if final == "ready" else "error",
                             time.perf_counter() - started)  # fmt: skip


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
