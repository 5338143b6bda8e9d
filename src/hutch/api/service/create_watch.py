"""A node call ends when its node's lease does (issue 11, ADR 0033).

A node that stops answering (partitioned, frozen) mid-create used to keep the create
waiting for the node client's 300 s timeout. :class:`LeaseWatch` races the node call
against the node's lease, read from the store by the store's clock every ``interval_s``:
once the lease has ended (the node missed every heartbeat of a lease) the call is
cancelled and :class:`NodeUnresponsiveError` raised. The create then marks its row
``killing`` without asking the silent node (ADR 0033's rollback of a node that does not
answer), so the cut-short id is never started anywhere else and is killed when the node
answers again, and placement tries the next node with a new row (a new id).

Every other call about one sandbox (kill, pause, resume, snapshot, metadata, network,
metrics, logs) is watched the same way by the cluster's router (``nodes/router.py``); what
each verb leaves in the store then is its service's (ADR 0033's second amendment).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

from hutch.api.nodes_model import Node
from hutch.shared.errors import UnavailableError
from hutch.shared.ids import NodeID

log = logging.getLogger(__name__)

T = TypeVar("T")


class NodeUnresponsiveError(UnavailableError):
    """The node's lease ended while a call to it was in flight: the call was abandoned."""


class LeaseReader(Protocol):
    """What the watch reads (``store/nodes.SqlNodeStore``)."""

    async def now(self) -> datetime: ...
    async def get_node(self, node_id: NodeID) -> Node: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseWatch:
    """See the module docstring; ``interval_s``: how often the lease is read."""

    nodes: LeaseReader
    interval_s: float

    async def lease_ended(self, node_id: NodeID) -> bool:
        """The node's lease has ended by the store's clock (a store error: not known to
        have ended, the call goes on)."""
        try:
            node = await self.nodes.get_node(node_id)
            return node.lease_expires_at < await self.nodes.now()
        except Exception as exc:
            log.warning("reading node %s's lease failed: %r", node_id, exc)
            return False

    async def call(
        self, node_id: NodeID, call: Awaitable[T], *, doing: str = "the sandbox was being created"
    ) -> T:
        """``await call``, or :class:`NodeUnresponsiveError` once ``node_id``'s lease ended
        (the call cancelled first); ``doing`` ends its message ("while ...")."""
        task = asyncio.ensure_future(call)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self.interval_s)
                if done:
                    return task.result()
                if await self.lease_ended(node_id):
                    break
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        raise NodeUnresponsiveError(
            f"node {node_id} stopped answering (its lease ended) while {doing}",
            public_message=f"Node {node_id} stopped answering while {doing}, please retry",
            error_code="sandbox_node_unresponsive",
        )
