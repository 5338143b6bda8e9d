"""Where templates' artifacts live across nodes (ADR 0029): holdings, sources, deletes.

The store's ``artifact_holdings`` rows (``store/artifacts.py``) say which node holds which
node template (a template id, ``name@build``, a snapshot id). This service answers the
questions the other services ask:

* **sources** for a create placed on a node that lacks the template: the node API
  addresses of the live nodes that hold it (the node fetches from the first that serves
  it, ``node/templates/transfer.py``); empty when the node holds it;
* **record** a holding when a node snapshots or fetches;
* **delete everywhere**: on every live node, every holder (of the template or of one of
  its ``name@build`` versions) and every other registered node; one that is down or does
  not answer keeps a ``deleting`` row, applied (:meth:`collect`) when it registers or
  beats again, so nothing is left on any disk (ADR 0037);
* **sync** what a node reports holding (registration replaces, heartbeats add).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Protocol

from hutch.shared.errors import HutchError
from hutch.shared.ids import NodeID

log = logging.getLogger(__name__)

#: Deletes one artifact on one node (its node API's ``DELETE``), idempotent.
DeleteOn = Callable[[NodeID, str], Awaitable[None]]


class HolderRow(Protocol):
    node_id: NodeID
    address: str
    state: str
    live: bool


class ArtifactHoldings(Protocol):
    """The store's side (``SqlArtifactStore``)."""

    async def record(self, artifact: str, node_id: NodeID) -> None: ...
    async def holders(self, artifact: str) -> Sequence[HolderRow]: ...
    async def holds(self, artifact: str, node_id: NodeID) -> bool: ...
    async def forget(self, artifact: str, node_id: NodeID) -> None: ...
    async def mark_deleting(self, artifact: str, node_id: NodeID) -> None: ...
    async def version_holders(self, name: str) -> Sequence[NodeID]: ...
    async def forget_versions(self, name: str, node_id: NodeID) -> None: ...
    async def pending(self, node_id: NodeID) -> list[str]: ...
    async def sync(self, node_id: NodeID, names: Iterable[str], *, replace: bool) -> None: ...


class ArtifactService:
    """See the module docstring."""

    def __init__(self, holdings: ArtifactHoldings) -> None:
        self._holdings = holdings
        self._collecting: dict[NodeID, asyncio.Task[None]] = {}

    async def sources_for(self, artifact: str, node_id: NodeID) -> tuple[str, ...]:
        """Where ``node_id`` may fetch ``artifact`` from; () when it holds it (or no live
        node does: the node then refuses, unless its own disk has it)."""
        if await self._holdings.holds(artifact, node_id):
            return ()  # the common case: one row read, not every holder's (ADR 0035)
        holders = await self._holdings.holders(artifact)
        if any(h.node_id == node_id and h.state == "held" for h in holders):
            return ()
        return tuple(
            h.address for h in holders if h.state == "held" and h.live and h.node_id != node_id
        )

    async def record(self, artifact: str, node_id: NodeID) -> None:
        """``node_id`` holds ``artifact`` now (never fails the caller's work)."""
        try:
            await self._holdings.record(artifact, node_id)
        except Exception:  # a heartbeat reports it again within seconds
            log.warning("could not record that node %s holds %s", node_id, artifact,
                        exc_info=True)  # fmt: skip

    async def delete_everywhere(
        self,
        artifact: str,
        *,
        live: Sequence[NodeID],
        delete_on: DeleteOn,
        known: Sequence[NodeID] = (),
    ) -> None:
        """Delete ``artifact`` (with a template, its kept ``name@build`` versions, which
        the node's delete removes with it) on every live node, every holder of it or of a
        version of it, and every other ``known`` (registered) node; a node that is not
        live or does not answer gets a ``deleting`` row instead (applied by
        :meth:`collect` when it registers or beats again). So a node that was down, even
        one the store did not know held it, deletes it when it is back."""
        holders = {h.node_id: h for h in await self._holdings.holders(artifact)}
        versions = set(await self._holdings.version_holders(artifact))
        up = set(live)
        for node_id in sorted({*live, *holders, *versions, *known}):
            holder = holders.get(node_id)
            if node_id not in up or (holder is not None and not holder.live):
                await self._holdings.mark_deleting(artifact, node_id)
                continue
            try:
                await delete_on(node_id, artifact)
            except HutchError as exc:
                log.warning("deleting %s on node %s failed (%s): marked for deletion",
                            artifact, node_id, exc.message)  # fmt: skip
                await self._holdings.mark_deleting(artifact, node_id)
                continue
            await self._forget(artifact, node_id, versions=node_id in versions)

    async def _forget(self, artifact: str, node_id: NodeID, *, versions: bool = True) -> None:
        await self._holdings.forget(artifact, node_id)
        if versions:
            await self._holdings.forget_versions(artifact, node_id)

    async def collect(self, node_id: NodeID, *, delete_on: DeleteOn) -> list[str]:
        """Apply the deletes pending on ``node_id``; the artifacts deleted."""
        done = []
        for artifact in await self._holdings.pending(node_id):
            with contextlib.suppress(HutchError):
                await delete_on(node_id, artifact)
                await self._forget(artifact, node_id)
                done.append(artifact)
        if done:
            log.info("deleted %s on node %s (deleted while it was away)", done, node_id)
        return done

    def collect_soon(self, node_id: NodeID, *, delete_on: DeleteOn) -> None:
        """:meth:`collect` in the background, once at a time per node (heartbeats)."""
        running = self._collecting.get(node_id)
        if running is not None and not running.done():
            return

        async def run() -> None:
            with contextlib.suppress(Exception):
                await self.collect(node_id, delete_on=delete_on)

        self._collecting[node_id] = asyncio.create_task(run(), name=f"hutch-gc-{node_id}")

    async def sync(self, node_id: NodeID, names: Iterable[str], *, replace: bool) -> None:
        """What ``node_id`` reports holding (registration: ``replace``; heartbeats add)."""
        try:
            await self._holdings.sync(node_id, names, replace=replace)
        except Exception:
            log.warning("could not record node %s's templates", node_id, exc_info=True)
