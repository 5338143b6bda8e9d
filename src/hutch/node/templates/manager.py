"""``TemplateManager``: the node's template work (imports, deletes, SDK builds), by name.

What serve's in-process ``LocalTemplateBuilder`` did now lives here, in the node's vocabulary
(``ImageTemplateOptions``, ``BuildSpec``, ``BuildStepError``); the node API
(``node/http/``) serves it and the api's ``HttpNodeClient`` translates. Imports run in a
worker thread (skopeo, unpacking and copying are blocking file work); one import or build
per name at a time on this node.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path

from hutch.node.templates.artifact import (
    VERSION_SEP,
    DirTemplateStore,
    TemplateArtifact,
    TemplateNotFoundError,
    keep_version,
)
from hutch.node.templates.artifact_store import ArtifactStore
from hutch.node.templates.build import BuildLog, BuildSandboxes, BuildSpec, build_template
from hutch.node.templates.image import (
    ImageTemplateOptions,
    ImportResult,
    Progress,
    delete_template,
    import_image,
)
from hutch.node.templates.snapshot import prune_snapshot_layers
from hutch.shared.errors import InvalidArgumentError, UnavailableError

_log = logging.getLogger(__name__)

#: An uploaded archive's hash names a file: nothing but what a hash is made of.
_FILES_HASH = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


class TemplateManager:
    """The templates of one node's home; ``sandboxes`` (its manager) runs build steps.

    ``shared_templates`` are other homes' read-only template directories (the node's
    ``shared_templates_dirs``): builds may start from their templates, and deleting one
    hides it here (a whiteout) without touching it.
    """

    def __init__(
        self,
        *,
        templates_dir: Path,
        envd_bundle: Path,
        sandboxes: BuildSandboxes | None = None,
        files_dir: Path | None = None,
        shared_templates: Sequence[Path] = (),
        max_disk_mb: int | None = None,
        artifact_store: ArtifactStore | None = None,
        files_retention_s: float = 7 * 86_400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._templates_dir = templates_dir
        #: The artifact store (a shared directory or an S3 bucket) every import, build and
        #: snapshot is published to, and a delete removed from.
        self.artifact_store = artifact_store
        #: The largest disk an imported template may give its sandboxes (the node's).
        self._max_disk_mb = max_disk_mb
        self._store = DirTemplateStore(templates_dir, shared=shared_templates)
        self._envd_bundle = envd_bundle
        self._sandboxes = sandboxes
        self._files_dir = files_dir or templates_dir.parent / "template-files"
        self._locks: dict[str, asyncio.Lock] = {}
        #: Archives unused this long (their mtime: stored or answered "present") that no
        #: build running here names are deleted by :meth:`sweep_files` (ADR 0037).
        self._files_retention_s = files_retention_s
        self._clock = clock
        self._swept_at: float | None = None
        #: How many running builds name each archive.
        self._files_in_use: collections.Counter[str] = collections.Counter()

    @property
    def templates_dir(self) -> Path:
        """Where the templates are published."""
        return self._templates_dir

    async def import_image(
        self, source: str, options: ImageTemplateOptions, *, progress: Progress | None = None
    ) -> ImportResult:
        """Import ``source`` (skopeo syntax) as template ``options.name``.

        ``progress`` is called from the worker thread. A disk above the node's limit is
        refused (``InvalidArgumentError`` naming it) before anything is fetched.
        """
        limit = self._max_disk_mb
        if options.disk_mb is not None and limit is not None and options.disk_mb > limit:
            raise InvalidArgumentError(
                f"disk size {options.disk_mb} MB is above this node's limit of {limit} MB "
                "(HUTCH_NODE_MAX_DISK_MB)"
            )
        async with self._locks.setdefault(options.name, asyncio.Lock()):
            result = await asyncio.to_thread(
                import_image, source, options, templates_dir=self._templates_dir,
                envd_bundle=self._envd_bundle, progress=progress,
            )  # fmt: skip
            await self.publish(options.name)
            return result

    async def publish(self, *names: str) -> None:
        """Publish ``names`` to the artifact store, when there is one (a failure is
        logged: the template stays usable here and on the peers it is fetched to)."""
        if self.artifact_store is not None:
            for name in names:
                await self.artifact_store.publish_quietly(name)

    async def delete(self, name: str) -> None:
        """Remove the template's files (idempotent), snapshot layers no longer used, and
        the template from the artifact store."""
        with contextlib.suppress(TemplateNotFoundError):
            await asyncio.to_thread(delete_template, self._templates_dir, name)
        # A shared template (another home's, read-only) is hidden here, never removed.
        self._store.hide_shared(name)
        await asyncio.to_thread(prune_snapshot_layers, self._templates_dir)
        if self.artifact_store is not None:
            await self.artifact_store.remove(name)

    # ---- E2B SDK template builds ---------------------------------------------------------

    def has_files(self, files_hash: str) -> bool:
        """Whether the archive of ``files_hash`` was uploaded already; when it was, it
        counts as used now (its mtime), so :meth:`sweep_files` keeps it a retention more.

        Neither this nor :meth:`sweep_files` awaits: on the node's event loop one runs
        whole before the other, so an archive answered "present" is never swept between
        the answer and its build."""
        path = self._files_dir / _check_hash(files_hash)
        try:
            os.utime(path, (now := self._clock(), now))
        except FileNotFoundError:
            return False
        return path.is_file()

    def sweep_files(self) -> list[str]:
        """Delete the archives unused for the retention that no running build names; the
        hashes deleted (synchronous on purpose: see :meth:`has_files`)."""
        now = self._clock()
        self._swept_at = now
        cutoff = now - self._files_retention_s
        gone: list[str] = []
        try:
            entries = list(os.scandir(self._files_dir))
        except FileNotFoundError:
            return []
        for entry in entries:
            name = entry.name
            # An upload's temporary file (``.tmp-``) is its writer's, written to as it comes
            # in: one left by a killed process goes once it is as old as an unused archive.
            leftover = name.startswith(".tmp-")
            if not leftover and (not _FILES_HASH.match(name) or self._files_in_use[name]):
                continue
            with contextlib.suppress(FileNotFoundError):
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
                    if not leftover:
                        gone.append(name)
        if gone:
            _log.info("deleted %d build archives unused for %.0f s", len(gone),
                      self._files_retention_s)  # fmt: skip
        return sorted(gone)

    def _sweep_files_soon(self) -> None:
        """:meth:`sweep_files` at most once per tenth of the retention (called as archives
        arrive and builds start: the only times the directory grows)."""
        if self._swept_at is None or self._clock() - self._swept_at >= self._files_retention_s / 10:
            self.sweep_files()

    async def store_files(self, files_hash: str, chunks: AsyncIterator[bytes]) -> None:
        """Keep an uploaded archive under its hash: written aside, renamed into place."""
        _check_hash(files_hash)
        self._files_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self._files_dir / f".tmp-{files_hash}-{uuid.uuid4().hex}"
        try:
            with tmp.open("wb") as out:
                async for chunk in chunks:
                    await asyncio.to_thread(out.write, chunk)
            os.replace(tmp, self._files_dir / files_hash)
        finally:
            tmp.unlink(missing_ok=True)
        self._sweep_files_soon()

    async def run_build(
        self,
        name: str,
        start: Mapping[str, object],
        *,
        cpu_count: float,
        memory_mb: int,
        log: BuildLog,
        build_id: str,
    ) -> None:
        """Build template ``name`` from E2B's ``TemplateBuildStartV2`` ``start``.

        Raises ``BuildStepError`` naming the failed step; a successful build is also kept
        as ``name@build_id`` (tags point at it).
        """
        if self._sandboxes is None:
            raise UnavailableError("this node cannot run build steps")
        named = _files_of(start)
        self._files_in_use.update(named)
        try:
            self._sweep_files_soon()
            await self._run_build(
                name, start, cpu_count=cpu_count, memory_mb=memory_mb, log=log,
                build_id=build_id,
            )  # fmt: skip
        finally:
            self._files_in_use.subtract(named)
            self._files_in_use += collections.Counter()  # drop the zeros

    async def _run_build(
        self,
        name: str,
        start: Mapping[str, object],
        *,
        cpu_count: float,
        memory_mb: int,
        log: BuildLog,
        build_id: str,
    ) -> None:
        base = await self._base(start, log=log)
        steps = start.get("steps") or []
        spec = BuildSpec(
            name=name,
            base=base,
            steps=list(steps) if isinstance(steps, list) else [],
            start_cmd=_opt_str(start.get("startCmd")),
            ready_cmd=_opt_str(start.get("readyCmd")),
            force=bool(start.get("force")),
            cpu_count=cpu_count,
            memory_mb=memory_mb,
            files_dir=self._files_dir,
        )
        async with self._locks.setdefault(name, asyncio.Lock()):
            await build_template(
                spec, sandboxes=self._sandboxes, templates_dir=self._templates_dir, log=log
            )
            # Inside the lock: the version kept is the one this build published.
            await asyncio.to_thread(keep_version, self._templates_dir, name, build_id)
            await self.publish(name, f"{name}{VERSION_SEP}{build_id}")

    async def _base(self, start: Mapping[str, object], *, log: BuildLog) -> TemplateArtifact:
        store = self._store
        from_template = _opt_str(start.get("fromTemplate"))
        if from_template:
            return await store.get(from_template.partition(":")[0])
        image = _opt_str(start.get("fromImage"))
        if not image:
            raise InvalidArgumentError("the build names neither fromTemplate nor fromImage")
        # An image hutch imported under that name (or from that source) first.
        for template in await store.list():
            source = str(template.build.get("source", ""))
            if template.image is not None and image in (template.name, source):
                return template
        # Else the registry, wherever one is reachable: imported once, kept hidden-ish.
        hidden = "img-" + hashlib.sha256(image.encode()).hexdigest()[:16]
        with contextlib.suppress(TemplateNotFoundError):
            return await store.get(hidden)
        log("info", f"importing docker://{image}", "base")
        result = await asyncio.to_thread(
            import_image,
            f"docker://{image}",
            ImageTemplateOptions(name=hidden),
            templates_dir=self._templates_dir,
            envd_bundle=self._envd_bundle,
        )
        return result.template


def _files_of(start: Mapping[str, object]) -> list[str]:
    """The archives a build's ``COPY`` steps name, each once."""
    steps = start.get("steps")
    named = {
        step["filesHash"]
        for step in (steps if isinstance(steps, list) else [])
        if isinstance(step, dict) and isinstance(step.get("filesHash"), str)
    }
    return sorted(named)


def _check_hash(files_hash: str) -> str:
    if not _FILES_HASH.match(files_hash):
        raise InvalidArgumentError(f"invalid files hash {files_hash!r}")
    return files_hash


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
