"""The lost-node sweeper (ADR 0025): a node whose lease ended more than the grace ago is
marked ``lost`` and its sandboxes are reported killed, the reason in their logs.

It runs as the elected leader's singleton ``lost-nodes`` (``service/leader.py``), and
stays safe if two apis ever sweep at once (a leader change): the status change is a
compare-and-set on the node's row that also requires the lease still to be past the grace
(``SqlNodeStore.mark_lost``), so exactly one sweeper wins each node, and a node that beat
meanwhile is left alone; the same transaction reports the node's live rows killed, and
their routes are withdrawn. A node that comes back registers again: same
boot id within the grace, its sandboxes are adopted (nothing was swept); after the sweep its
rows are killed, so its reconcile destroys them on the node: no sandbox id ever runs on two
nodes, because a sandbox id is placed on one node for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

from hutch.api.nodes_model import Node
from hutch.api.service.ports import SandboxRoutes
from hutch.shared.ids import NodeID, SandboxID

log = logging.getLogger(__name__)


class LeaseRows(Protocol):
    """What the sweeper needs of the node store (``SqlNodeStore``)."""

    async def expired(self, *, grace_s: float) -> tuple[datetime, Sequence[Node]]: ...
    async def mark_lost(
        self, node_id: NodeID, *, reason: str, lease_before: datetime
    ) -> list[str] | None: ...


class LostNodeSweeper:
    """See the module docstring."""

    def __init__(
        self,
        *,
        nodes: LeaseRows,
        routes: SandboxRoutes,
        grace_s: float,
        interval_s: float,
    ) -> None:
        self._nodes = nodes
        self._routes = routes
        self._grace_s = grace_s
        self._interval_s = interval_s

    async def sweep_once(self) -> list[tuple[NodeID, list[SandboxID]]]:
        """Mark every node past lease and grace lost; what this sweeper won and killed."""
        now, expired = await self._nodes.expired(grace_s=self._grace_s)
        swept: list[tuple[NodeID, list[SandboxID]]] = []
        for node in expired:
            silent = (now - node.heartbeat_at).total_seconds()
            reason = (
                f"node {node.id} lost: no heartbeat for {silent:.0f} s (lease ended at "
                f"{node.lease_expires_at.isoformat()}, grace {self._grace_s:g} s)"
            )
            killed = await self._nodes.mark_lost(
                node.id, reason=reason, lease_before=now - timedelta(seconds=self._grace_s)
            )
            if killed is None:
                continue  # another api swept it, or it beat meanwhile
            for sandbox_id in killed:
                with contextlib.suppress(Exception):  # a route cache miss finds it killed
                    await self._routes.withdraw(SandboxID(sandbox_id))
            log.warning("%s; %d sandboxes reported killed", reason, len(killed))
            swept.append((node.id, [SandboxID(k) for k in killed]))
        return swept

    async def run(self) -> None:
        """Sweep every ``interval_s`` until cancelled (failures are logged)."""
        while True:
            try:
                await self.sweep_once()
            except Exception:
                log.exception("lost-node sweep failed")
            await asyncio.sleep(self._interval_s)
