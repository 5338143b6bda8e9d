"""Startup reconciliation: make the store, the runtime and the host agree again.

Rows in ``running`` are *known* to the node; rows in ``pausing``, ``paused`` or ``resuming``
are too, and are kept as long as their files are: they end ``running`` if the container
runs, ``paused`` (memory kept) if it is frozen, ``paused`` (filesystem only) if it is gone,
e.g. after the host restarted (ADR 0004). A ``creating`` row is a create that
``hutch serve`` died in the middle of (its caller got no answer), a ``killing`` row a kill
that did not finish. The node destroys whatever is not known, adopts what is known and
still running, and cleans the leftovers of known ones that are gone; every live row that
was not adopted is then marked killed. Adopted sandboxes get their proxy route back, and
the store's metadata (the source of truth, ADR 0005) if the node's copy differs.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from hutch.api.app import ApiStore
from hutch.api.models import Sandbox, SandboxState
from hutch.node.sandbox.manager import SandboxManager
from hutch.proxy.catalog import InMemorySandboxCatalog
from hutch.serve.catalog import route_for

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
    paused = [sid for sid, row in rows.items() if row.state in _PAUSE_STATES]
    report = await manager.reconcile(known, paused_ids=paused)
    adopted = set(report.adopted)
    killed = []
    for sid, row in rows.items():
        if sid in adopted:
            running = manager.get(sid)
            if dict(running.metadata) != dict(row.metadata):
                # The store is the source of truth (ADR 0005): a crash between a patch's
                # store step and its node step is repaired here.
                running = manager.set_metadata(sid, row.metadata)
            mode = report.paused.get(sid)
            if row.state in _PAUSE_STATES:
                # A pause or resume cut short ends as the host has it (ADR 0004).
                await store.sandboxes.set_state(
                    sid, team_id=None, expected=_PAUSE_STATES,
                    new=SandboxState.PAUSED if mode else SandboxState.RUNNING,
                    pause_mode=mode,
                )  # fmt: skip
            route = route_for(sid, str(running.address), row.envd_access_token)
            catalog.put(
                dataclasses.replace(route, running=mode is None, auto_resume=row.auto_resume)
            )
        else:
            await store.sandboxes.mark_killed(sid, team_id=None)
            killed.append(sid)
    result = StartupReport(
        adopted=tuple(sorted(adopted)), removed=tuple(report.removed), marked_killed=tuple(killed)
    )
    log.info("reconciled: %s", result)
    return result
