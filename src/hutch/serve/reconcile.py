"""Startup reconciliation: make the store, the runtime and the host agree again.

Only rows in ``running`` are *known* to the node: a ``creating`` row is a create that
``hutch serve`` died in the middle of (its caller got no answer), a ``killing`` row a kill
that did not finish. The node destroys whatever is not known, adopts what is known and
still running, and cleans the leftovers of known ones that are gone; every live row that
was not adopted is then marked killed. Adopted sandboxes get their proxy route back, and
the store's metadata (the source of truth, ADR 0005) if the node's copy differs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from hutch.api.app import ApiStore
from hutch.api.models import Sandbox, SandboxState
from hutch.node.sandbox.manager import SandboxManager
from hutch.proxy.catalog import InMemorySandboxCatalog
from hutch.serve.catalog import route_for

log = logging.getLogger(__name__)

#: Every state of a row whose sandbox might exist on the node.
LIVE_STATES = tuple(s for s in SandboxState if s is not SandboxState.KILLED)


@dataclass(frozen=True, slots=True)
class StartupReport:
    """What reconciliation did, for the log and the tests."""

    adopted: tuple[str, ...]
    removed: tuple[str, ...]
    marked_killed: tuple[str, ...]


async def live_rows(store: ApiStore) -> list[Sandbox]:
    """Every row, of every team, that is not ``killed`` (paged through)."""
    rows: list[Sandbox] = []
    for team in await store.teams.list_teams():
        token: str | None = None
        while True:
            page = await store.sandboxes.list_sandboxes(
                team_id=team.id, states=LIVE_STATES, limit=100, next_token=token
            )
            rows.extend(page.items)
            token = page.next_token
            if token is None:
                break
    return rows


async def reconcile(
    store: ApiStore, manager: SandboxManager, catalog: InMemorySandboxCatalog
) -> StartupReport:
    """See the module docstring. Call after ``manager.start()`` and before serving."""
    rows = {row.id: row for row in await live_rows(store)}
    known = [sid for sid, row in rows.items() if row.state is SandboxState.RUNNING]
    report = await manager.reconcile(known)
    adopted = set(report.adopted)
    killed = []
    for sid, row in rows.items():
        if sid in adopted:
            running = manager.get(sid)
            if dict(running.metadata) != dict(row.metadata):
                # The store is the source of truth (ADR 0005): a crash between a patch's
                # store step and its node step is repaired here.
                running = manager.set_metadata(sid, row.metadata)
            catalog.put(route_for(sid, str(running.address), row.envd_access_token))
        else:
            await store.sandboxes.mark_killed(sid, team_id=None)
            killed.append(sid)
    result = StartupReport(
        adopted=tuple(sorted(adopted)), removed=tuple(report.removed), marked_killed=tuple(killed)
    )
    log.info("reconciled: %s", result)
    return result
