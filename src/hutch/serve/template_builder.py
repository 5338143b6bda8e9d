"""``LocalTemplateBuilder``: the api's ``TemplateBuilder`` over this host's template directory.

Imports run in a worker thread (skopeo, unpacking and copying are blocking file work); one
import per name at a time in this process. Both ``hutch serve`` (REST) and the ``hutch
template`` CLI use it, so the two produce identical templates.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

from hutch.api.service.ports import (
    BuildFailedError,
    BuildLogger,
    ImageImport,
    ImportedImage,
    ImportProgress,
)
from hutch.node.templates.artifact import (
    DirTemplateStore,
    TemplateArtifact,
    TemplateNotFoundError,
    keep_version,
)
from hutch.node.templates.build import BuildSandboxes, BuildSpec, BuildStepError, build_template
from hutch.node.templates.image import ImageTemplateOptions, delete_template, import_image
from hutch.node.templates.snapshot import prune_snapshot_layers


class LocalTemplateBuilder:
    """Satisfies the api's ``TemplateBuilder`` and ``BuildRunner`` for one node's home.

    ``sandboxes`` (the node's manager) runs build steps; without it only imports work.
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
    ) -> None:
        self._templates_dir = templates_dir
        self._store = DirTemplateStore(templates_dir, shared=shared_templates)
        self._envd_bundle = envd_bundle
        self._sandboxes = sandboxes
        self._files_dir = files_dir or templates_dir.parent / "template-files"
        self._locks: dict[str, asyncio.Lock] = {}

    async def import_image(
        self, request: ImageImport, *, progress: ImportProgress | None = None
    ) -> ImportedImage:
        """See ``TemplateBuilder.import_image``."""
        options = ImageTemplateOptions(
            name=request.name, inject_envd=request.inject_envd,
            envd_path=Path(request.envd_path) if request.envd_path else None,
            cpu_count=request.cpu_count, memory_mb=request.memory_mb,
            start_cmd=request.start_cmd, ready_cmd=request.ready_cmd,
        )  # fmt: skip
        async with self._locks.setdefault(request.name, asyncio.Lock()):
            result = await asyncio.to_thread(
                import_image, request.source, options, templates_dir=self._templates_dir,
                envd_bundle=self._envd_bundle, progress=progress,
            )  # fmt: skip
        return ImportedImage(
            name=request.name, fingerprint=result.fingerprint, cache_hit=result.cache_hit,
            envd_injected=result.envd_sha256 is not None, envd_sha256=result.envd_sha256,
        )  # fmt: skip

    async def delete(self, name: str) -> None:
        """See ``TemplateBuilder.delete``."""
        with contextlib.suppress(TemplateNotFoundError):
            await asyncio.to_thread(delete_template, self._templates_dir, name)
        # A shared template (another home's, read-only) is hidden here, never removed.
        self._store.hide_shared(name)
        await asyncio.to_thread(prune_snapshot_layers, self._templates_dir)

    # ---- E2B SDK template builds (BuildRunner) -------------------------------------------

    async def has_files(self, files_hash: str) -> bool:
        """See ``BuildRunner.has_files``."""
        return (self._files_dir / files_hash).is_file()

    async def store_files(self, files_hash: str, chunks: AsyncIterator[bytes]) -> None:
        """See ``BuildRunner.store_files``: written aside, renamed into place."""
        self._files_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self._files_dir / f".tmp-{files_hash}-{uuid.uuid4().hex}"
        try:
            with tmp.open("wb") as out:
                async for chunk in chunks:
                    await asyncio.to_thread(out.write, chunk)
            os.replace(tmp, self._files_dir / files_hash)
        finally:
            tmp.unlink(missing_ok=True)

    async def run_build(
        self,
        name: str,
        start: Mapping[str, object],
        *,
        cpu_count: float,
        memory_mb: int,
        log: BuildLogger,
        build_id: str,
    ) -> None:
        """See ``BuildRunner.run_build``."""
        if self._sandboxes is None:
            raise BuildFailedError("this node cannot run build steps")
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
            try:
                await build_template(
                    spec, sandboxes=self._sandboxes, templates_dir=self._templates_dir, log=log
                )
            except BuildStepError as exc:
                raise BuildFailedError(exc.message, step=exc.step) from exc
            # Inside the lock: the version kept is the one this build published.
            await asyncio.to_thread(keep_version, self._templates_dir, name, build_id)

    async def _base(self, start: Mapping[str, object], *, log: BuildLogger) -> TemplateArtifact:
        store = self._store
        from_template = _opt_str(start.get("fromTemplate"))
        if from_template:
            return await store.get(from_template.partition(":")[0])
        image = _opt_str(start.get("fromImage"))
        if not image:
            raise BuildFailedError("the build names neither fromTemplate nor fromImage")
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


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
