"""``PUT /sandboxes/{id}/network``: replace a running sandbox's egress policy.

Under the sandbox's lock: the policy is validated (``shared/egress.py``, a 400 naming the
entry), the node puts it in force (new connections meet it when the call returns), then
the store records it; if the store step fails the node gets the old policy back. Only a
``running`` sandbox takes an update (409 naming the state otherwise, as E2B); a paused
one keeps the policy it had and gets it again on resume. ``allowPublicTraffic`` and
``maskRequestHost`` are create-only (E2B's update body has neither).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

from hutch.api.models import Sandbox, SandboxState
from hutch.api.service.locks import SandboxLocks
from hutch.api.service.ports import NodeClient
from hutch.api.store.base import SandboxStore
from hutch.shared.egress import EgressPolicy, parse_policy
from hutch.shared.errors import ConflictError, NotFoundError
from hutch.shared.ids import TeamID


def _not_found(sandbox_id: str) -> NotFoundError:
    return NotFoundError(
        f"sandbox {sandbox_id} not found", public_message=f"Sandbox {sandbox_id} not found"
    )


class NetworkService:
    """See the module docstring."""

    def __init__(self, *, sandboxes: SandboxStore, node: NodeClient, locks: SandboxLocks) -> None:
        self._sandboxes = sandboxes
        self._node = node
        self._locks = locks

    async def set_network(
        self,
        *,
        team_id: TeamID,
        sandbox_id: str,
        allow_out: Sequence[str] | None,
        deny_out: Sequence[str] | None,
        dns_servers: Sequence[str] | None = None,
        allow_internet: bool | None = None,
    ) -> Sandbox:
        """Replace the whole egress policy (omitted lists are cleared)."""
        policy = parse_policy(
            allow_out, deny_out, dns_servers=dns_servers, allow_internet=allow_internet
        )
        sandbox = await self._sandboxes.find_sandbox(sandbox_id, team_id=team_id)
        if sandbox is None or sandbox.state is SandboxState.KILLED:
            raise _not_found(sandbox_id)
        async with self._locks.hold(sandbox.id):
            before = await self._sandboxes.find_sandbox(sandbox.id, team_id=team_id)
            if before is None or before.state is SandboxState.KILLED:
                raise _not_found(sandbox_id)
            if before.state is not SandboxState.RUNNING:
                raise ConflictError(
                    f"sandbox {before.id} is {before.state}",
                    public_message=f"Sandbox {before.id} is {before.state}; only a running "
                    "sandbox's network can be updated",
                )
            # Shielded: once the node has it, the store must record it (or undo it).
            return await asyncio.shield(self._apply(before, policy))

    async def _apply(self, before: Sandbox, policy: EgressPolicy) -> Sandbox:
        await self._node.set_network(before.id, policy)
        network = dataclasses.replace(before.network, egress=policy)
        try:
            return await self._sandboxes.set_network(before.id, network, team_id=None)
        except BaseException:
            await self._node.set_network(before.id, before.network.egress)
            raise
