"""``ClusterBuilds``: E2B SDK template builds on a cluster api whose nodes register.

Such an api has no node at hand when the SDK uploads a step's files, so the archives are
kept in the store (``store/build_files.py``) and every build is placed when its worker
runs it: on a ready node with the most free disk (the same choice as an image import,
:meth:`NodeRouter.import_candidates`). Before the build runs there, the node is given what
it lacks: each ``COPY`` step's archive, pushed over the node API's ``PUT /v1/build-files``
(skipped when the node has it), and the ``fromTemplate`` base, fetched from a node that
holds it (ADR 0029's artifact fetch). A node that does not answer while being prepared is
left for the next one; once the build has started on a node it is not run again elsewhere
(ADR 0024: a build runs once): a node that fails or is lost mid-build fails the build.
The node that built it is returned, and recorded as the holder of the template and its
``name@build`` version with the build's ``ready`` (``store/builds.py``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, cast

from hutch.api.nodes.router import NodeRouter
from hutch.api.service.artifacts import ArtifactService
from hutch.api.service.ports import BuildLogger, NodeClient
from hutch.shared.errors import HutchError, UnavailableError
from hutch.shared.ids import TEMPLATE_VERSION_SEP, NodeID

_log = logging.getLogger(__name__)


class BuildFiles(Protocol):
    """The store's archives (``SqlBuildFileStore``)."""

    async def has(self, files_hash: str) -> bool: ...
    async def put(self, files_hash: str, chunks: AsyncIterator[bytes]) -> int: ...
    def read(self, files_hash: str) -> AsyncIterator[bytes]: ...


class NodeBuilds(Protocol):
    """What a node's client does for a build (``HttpNodeClient``)."""

    async def has_files(self, files_hash: str) -> bool: ...
    async def store_files(self, files_hash: str, chunks: AsyncIterator[bytes]) -> None: ...
    async def fetch_artifact(self, name: str, sources: Sequence[str]) -> bool: ...
    async def run_build(
        self, name: str, start: Mapping[str, object], *, cpu_count: float, memory_mb: int,
        log: BuildLogger, build_id: str,
    ) -> object: ...  # fmt: skip


def _on(client: NodeClient) -> NodeBuilds:
    return cast("NodeBuilds", client)


def files_of(start: Mapping[str, object]) -> list[str]:
    """The archives a build's ``COPY`` steps name, each once, in order."""
    seen: list[str] = []
    steps = start.get("steps")
    for step in steps if isinstance(steps, list) else []:
        files_hash = step.get("filesHash") if isinstance(step, dict) else None
        if isinstance(files_hash, str) and files_hash and files_hash not in seen:
            seen.append(files_hash)
    return seen


def base_of(start: Mapping[str, object]) -> str | None:
    """The node template a build starts from (``fromTemplate``, resolved by the api)."""
    base = start.get("fromTemplate")
    return base.partition(":")[0] if isinstance(base, str) and base else None


class ClusterBuilds:
    """See the module docstring."""

    def __init__(
        self,
        router: NodeRouter,
        *,
        files: BuildFiles,
        artifacts: ArtifactService | None,
        template_id: Callable[[str], Awaitable[str | None]] | None = None,
        watch_s: float = 2.0,
    ) -> None:
        self._router = router
        #: A template's id by id or alias (holdings are by id; ``fromTemplate`` may be an
        #: alias): the store's; None: the name is the id.
        self._template_id = template_id
        self._files = files
        self._artifacts = artifacts
        #: How often the building node's row is read: a ``lost`` node fails the build (its
        #: stream, silent while a step runs, has no read timeout).
        self._watch_s = watch_s

    async def has_files(self, files_hash: str) -> bool:
        """Kept in the store (any api answers)."""
        return await self._files.has(files_hash)

    async def store_files(self, files_hash: str, chunks: AsyncIterator[bytes]) -> None:
        """Kept in the store until a build is placed."""
        await self._files.put(files_hash, chunks)

    async def _prepare(
        self, node_id: NodeID, start: Mapping[str, object], log: BuildLogger
    ) -> None:
        for files_hash in files_of(start):
            if await self._router.call(node_id, lambda c, h=files_hash: _on(c).has_files(h)):
                continue
            if not await self._files.has(files_hash):
                continue  # never uploaded: the node's step says so, precisely
            await self._router.call(
                node_id, lambda c, h=files_hash: _on(c).store_files(h, self._files.read(h))
            )
        base = base_of(start)
        if base is None or self._artifacts is None:
            return
        name, sep, version = base.partition(TEMPLATE_VERSION_SEP)
        if self._template_id is not None:
            base = (await self._template_id(name) or name) + sep + version
        sources = await self._artifacts.sources_for(base, node_id)
        if not sources:
            return  # held there (or by no live node: the node's own disk, or its error)
        log("info", f"fetching base template {base} to node {node_id}", "base")
        if await self._router.call(node_id, lambda c: _on(c).fetch_artifact(base, sources)):
            await self._artifacts.record(base, node_id)

    async def _while_alive(self, node_id: NodeID, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self._watch_s)
                if done:
                    task.result()
                    return
                if await self._router.is_lost(node_id):
                    raise UnavailableError(f"node {node_id} was lost mid-build")
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def run_build(
        self,
        name: str,
        start: Mapping[str, object],
        *,
        cpu_count: float,
        memory_mb: int,
        log: BuildLogger,
        build_id: str,
    ) -> NodeID:
        """Place, prepare and run the build; the node that built it."""
        nodes = await self._router.import_candidates()
        if not nodes:
            raise UnavailableError("no ready node with free disk to build the template on")
        last: HutchError | None = None
        for node_id in nodes:
            try:
                await self._prepare(node_id, start, log)
            except UnavailableError as exc:
                _log.warning("build %s: node %s did not answer (%s); trying another",
                             build_id, node_id, exc)  # fmt: skip
                last = exc
                continue
            log("info", f"building on node {node_id}")
            await self._while_alive(
                node_id,
                self._router.call(
                    node_id,
                    lambda c: _on(c).run_build(
                        name, start, cpu_count=cpu_count, memory_mb=memory_mb, log=log,
                        build_id=build_id,
                    ),
                ),
            )  # fmt: skip
            return node_id
        assert last is not None
        raise UnavailableError(
            f"no node could take the build (the last said: {last.public_message})"
        ) from last
