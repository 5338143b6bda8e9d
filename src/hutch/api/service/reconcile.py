"""Reconciliation: make the store and one node agree again (through ``NodeClient``).

It runs when a node registers (``registration_reconciler``: ``hutch serve``'s start, a
``hutch node`` start or its return after a lost lease) and looks **only at that node's rows**
(``sandboxes.node_id``): another node's sandboxes are never adopted, cleaned or marked killed
here (ADR 0025). A node back with a new boot id (the host rebooted, or the node says so) has
lost its running sandboxes: none is offered for adoption, so the node destroys whatever is
left and those rows are marked killed; paused rows are still offered (a filesystem-only
pause survives a reboot, ADR 0004).

Rows in ``running`` are *known* to the node; rows in ``pausing``, ``paused`` or ``resuming``
are too, and are kept as long as their files are: they end ``running`` if the container
runs, ``paused`` (memory kept) if it is frozen, ``paused`` (filesystem only) if it is gone,
e.g. after the host restarted (ADR 0004). A ``creating`` row is a create that the process
died in the middle of (its caller got no answer), a ``killing`` row a kill that did not
finish. The node destroys whatever is not known, adopts what is known and still there,
and cleans the leftovers of known ones that are gone; every live row that was not adopted
is then marked killed. Adopted sandboxes get their proxy route back, and the store's
metadata (the source of truth, ADR 0005) if the node's copy differs.

A registration from the **same live process** (same boot id, same incarnation: its lease
was lost to a partition, or a heartbeat was refused) is not a restart: its ``creating``
rows are creates it is making right now, whose callers will still get an answer. They are
offered as known (so a create that has finished but not yet answered is not destroyed) and
left ``creating`` whatever the node says: the create settles them, or the stale-create
reaper if its api died (ADR 0033). Only a previous incarnation's ``creating`` rows are
cleaned.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from hutch.api.models import Sandbox, SandboxState
from hutch.api.nodes_model import Registered
from hutch.api.service.membership import OnRegistered, ReconcileOutcome
from hutch.api.service.ports import NodeClient, SandboxRoute, SandboxRoutes
from hutch.api.store.base import SandboxStore, TeamStore
from hutch.shared.ids import NodeID, SandboxID

log = logging.getLogger(__name__)

#: Rows whose sandbox the node may hold frozen, stopped or half-way (kept if its files are).
_PAUSE_STATES = frozenset({SandboxState.PAUSING, SandboxState.PAUSED, SandboxState.RESUMING})
#: Every state of a row whose sandbox might exist on the node.
LIVE_STATES = tuple(s for s in SandboxState if s is not SandboxState.KILLED)


@dataclass(frozen=True, slots=True)
class StartupReport:
    """What reconciliation did, for the log and the tests."""

    adopted: tuple[str, ...]
    removed: tuple[str, ...]
    marked_killed: tuple[str, ...]


async def live_rows(*, teams: TeamStore, sandboxes: SandboxStore) -> list[Sandbox]:
    """Every row, of every team, that is not ``killed`` (paged through)."""
    rows: list[Sandbox] = []
    for team in await teams.list_teams():
        token: str | None = None
        while True:
            page = await sandboxes.list_sandboxes(
                team_id=team.id, states=LIVE_STATES, limit=100, next_token=token
            )
            rows.extend(page.items)
            token = page.next_token
            if token is None:
                break
    return rows


async def reconcile(
    *,
    teams: TeamStore,
    sandboxes: SandboxStore,
    node: NodeClient,
    routes: SandboxRoutes,
    rebooted: bool = False,
    same_process: bool = False,
) -> StartupReport:
    """See the module docstring: the rows of ``node.node_id`` only; ``same_process``: the
    node process that registered before, whose ``creating`` rows are kept."""
    rows = {
        row.id: row
        for row in await live_rows(teams=teams, sandboxes=sandboxes)
        if row.node_id == node.node_id
    }
    in_flight = {
        s for s, row in rows.items() if same_process and row.state is SandboxState.CREATING
    }
    known = [
        SandboxID(s)
        for s, row in rows.items()
        if (row.state is SandboxState.RUNNING and not rebooted) or s in in_flight
    ]
    paused = [SandboxID(s) for s, row in rows.items() if row.state in _PAUSE_STATES]
    report = await node.reconcile(known, paused=paused)
    killed = []
    reason = (
        f"node {node.node_id} came back with a new boot id (its host restarted): the "
        "sandbox is gone"
        if rebooted
        else f"node {node.node_id} no longer had the sandbox when it registered"
    )
    for sid, row in rows.items():
        if sid in in_flight:
            continue  # its create answers for it (or the stale-create reaper)
        adopted = report.adopted.get(SandboxID(sid))
        if adopted is None:
            await sandboxes.mark_killed(sid, team_id=None, reason=reason)
            killed.append(sid)
            continue
        placed, metadata, mode = adopted
        if dict(metadata) != dict(row.metadata):
            # The store is the source of truth (ADR 0005): a crash between a patch's
            # store step and its node step is repaired here.
            await node.set_metadata(SandboxID(sid), row.metadata)
        if row.state in _PAUSE_STATES:
            # A pause or resume cut short ends as the host has it (ADR 0004).
            await sandboxes.set_state(
                sid, team_id=None, expected=_PAUSE_STATES,
                new=SandboxState.PAUSED if mode else SandboxState.RUNNING, pause_mode=mode,
            )  # fmt: skip
        await routes.publish(
            SandboxRoute(
                sandbox_id=SandboxID(sid), address=placed.address,
                envd_access_token=row.envd_access_token, running=mode is None,
                auto_resume=row.auto_resume, node_id=placed.node_id,
                traffic_access_token=row.traffic_access_token,
                mask_request_host=row.network.mask_request_host,
            )
        )  # fmt: skip
    result = StartupReport(
        adopted=tuple(sorted(report.adopted)),
        removed=tuple(report.removed),
        marked_killed=tuple(killed),
    )
    log.info("reconciled: %s", result)
    return result


def registration_reconciler(
    *,
    teams: TeamStore,
    sandboxes: SandboxStore,
    client: Callable[[NodeID], Awaitable[NodeClient]],
    forget: Callable[[NodeID], Awaitable[None]],
    routes: SandboxRoutes,
) -> OnRegistered:
    """``MembershipService.on_registered``: reconcile the node that just registered with its
    own rows, through its client (``client(node_id)``, e.g. ``NodeRegistry.client``; the
    cached one is dropped first, the node may have moved)."""

    async def on_registered(registered: Registered) -> ReconcileOutcome:
        await forget(registered.node.id)
        node = await client(registered.node.id)
        report = await reconcile(
            teams=teams, sandboxes=sandboxes, node=node, routes=routes,
            rebooted=registered.rebooted, same_process=registered.same_process,
        )  # fmt: skip
        return ReconcileOutcome(
            adopted=report.adopted, removed=report.removed, marked_killed=report.marked_killed
        )

    return on_registered
