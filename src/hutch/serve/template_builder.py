"""``LocalTemplateBuilder``: the api's ``TemplateBuilder`` over this host's template directory.

Imports run in a worker thread (skopeo, unpacking and copying are blocking file work); one
import per name at a time in this process. Both ``hutch serve`` (REST) and the ``hutch
template`` CLI use it, so the two produce identical templates.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from hutch.api.service.ports import ImageImport, ImportedImage, ImportProgress
from hutch.node.templates.artifact import TemplateNotFoundError
from hutch.node.templates.image import ImageTemplateOptions, delete_template, import_image
from hutch.node.templates.snapshot import prune_snapshot_layers


class LocalTemplateBuilder:
    """Satisfies :class:`hutch.api.service.ports.TemplateBuilder` for one node's home."""

    def __init__(self, *, templates_dir: Path, envd_bundle: Path) -> None:
        self._templates_dir = templates_dir
        self._envd_bundle = envd_bundle
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
        await asyncio.to_thread(prune_snapshot_layers, self._templates_dir)
