"""Teams as admins manage them: create, list, delete, and the keys of any team.

Every method takes the acting :class:`~hutch.api.service.keys.Caller`, checks the admin role
(ADR 0015) and logs the action on ``hutch.audit`` with the key's id, so what an admin did can
be traced to the key that did it. A team is named by its id or its name.

Deleting a team takes what it owns with it: its sandboxes (refused while any is alive unless
``force``, which kills them), its volumes' data and its templates' files (the services remove
those; the rows go by cascade with the team row), its keys (so they answer 401 from then on).
"""

from __future__ import annotations

import contextlib
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from hutch.api.models import ApiKey, CreatedApiKey, Sandbox, SandboxState, Team
from hutch.api.service.keys import Caller, KeyService
from hutch.api.service.quotas import QuotaService
from hutch.api.store.base import ApiKeyStore, SandboxStore, TeamStore
from hutch.shared.errors import (
    ConflictError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from hutch.shared.ids import ApiKeyID, TeamID

_audit = logging.getLogger("hutch.audit")
_log = logging.getLogger(__name__)

#: What a team name may be: shown in CLI output and usable as a path segment.
TEAM_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
#: States in which a sandbox still belongs to its team on a node (what delete refuses on).
LIVE_STATES: Final = frozenset(
    {
        SandboxState.CREATING,
        SandboxState.RUNNING,
        SandboxState.PAUSING,
        SandboxState.PAUSED,
        SandboxState.RESUMING,
    }
)


#: What ``running-counts`` counts: live and not paused.
RUNNING_STATES: Final = frozenset(s.value for s in LIVE_STATES if s is not SandboxState.PAUSED)


def check_team_name(name: object) -> str:
    """``name`` if it is a valid team name, else :class:`InvalidArgumentError`."""
    if not isinstance(name, str) or TEAM_NAME_RE.fullmatch(name) is None:
        raise InvalidArgumentError(
            f"invalid team name {name!r}: 1 to 63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def _team_not_found(ref: str) -> NotFoundError:
    return NotFoundError(f"team {ref!r} not found", public_message=f"Team '{ref}' not found")


@dataclass(frozen=True, slots=True)
class TeamCleanup:
    """What deleting a team must do beyond its rows (the other services' work)."""

    #: Kill one sandbox of the team (the sandbox service's kill).
    kill_sandbox: Callable[[TeamID, str], Awaitable[object]]
    #: Delete every volume of the team with its data; returns how many.
    delete_volumes: Callable[[TeamID], Awaitable[int]]
    #: Delete every template of the team with its files; returns how many.
    delete_templates: Callable[[TeamID], Awaitable[int]]
    #: Cancel every pending and running build of the team: ``(cancelled, failed)``.
    cancel_builds: Callable[[TeamID], Awaitable[tuple[int, int]]] | None = None


class TeamService:
    """Admin operations on teams and their keys."""

    def __init__(
        self,
        *,
        teams: TeamStore,
        keys: ApiKeyStore,
        sandboxes: SandboxStore,
        quotas: QuotaService | None = None,
        cleanup: TeamCleanup | None = None,
    ) -> None:
        self.quotas = quotas
        self._teams = teams
        self._keys = keys
        self._sandboxes = sandboxes
        self._cleanup = cleanup

    async def resolve(self, ref: str) -> Team:
        """The team with id or name ``ref``; :class:`NotFoundError` (404) if none."""
        found = await self._teams.find_team(TeamID(ref))
        if found is None:
            found = await self._teams.find_team_by_name(ref)
        if found is None:
            raise _team_not_found(ref)
        return found

    async def list_teams(self, caller: Caller) -> list[Team]:
        """Every team, oldest first."""
        KeyService.require_admin(caller, action="Listing every team")
        return await self._teams.list_teams()

    async def default_team(self) -> Team:
        return await self._teams.ensure_default_team()

    async def create_team(self, caller: Caller, *, name: object) -> Team:
        """A new team; a taken name is :class:`AlreadyExistsError` (409)."""
        KeyService.require_admin(caller, action="Creating a team")
        team = await self._teams.create_team(name=check_team_name(name))
        _audit.info("admin key %s created team %s (%s)", caller.key.id, team.id, team.name)
        return team

    async def live_sandboxes(self, team_id: TeamID) -> int:
        """How many of the team's sandboxes are alive (running, paused or in between)."""
        return await self._sandboxes.count_sandboxes(team_id=team_id, states=LIVE_STATES)

    async def delete_team(self, caller: Caller, *, ref: str, force: bool = False) -> Team:
        """Delete a team and everything it owns. Alive sandboxes: 409 naming how many, or
        with ``force``, killed first. The default team is never deleted (409)."""
        KeyService.require_admin(caller, action="Deleting a team")
        team = await self.resolve(ref)
        if team.id == (await self._teams.ensure_default_team()).id:
            raise ConflictError(
                "the default team cannot be deleted",
                public_message="Team 'default' is the default team and cannot be deleted",
            )
        live = await self.live_sandboxes(team.id)
        if live and not force:
            raise ConflictError(
                f"team {team.id} owns {live} live sandboxes",
                public_message=f"Team '{team.name}' owns {live} running or paused "
                f"sandbox(es); kill them first or delete with force=true",
            )
        killed = 0
        if self._cleanup is not None:
            killed = await self._kill_all(team.id)
            volumes = await self._cleanup.delete_volumes(team.id)
            templates = await self._cleanup.delete_templates(team.id)
        else:
            volumes = templates = 0
        await self._teams.delete_team(team.id)
        _audit.info(
            "admin key %s deleted team %s (%s): %d sandboxes killed, %d volumes, %d templates",
            caller.key.id, team.id, team.name, killed, volumes, templates,
        )  # fmt: skip
        return team

    async def _live_of(self, team_id: TeamID) -> list[Sandbox]:
        """Every live sandbox of the team, newest first (all the listing's pages)."""
        found: list[Sandbox] = []
        token: str | None = None
        while True:
            page = await self._sandboxes.list_sandboxes(
                team_id=team_id, states=LIVE_STATES, limit=100, next_token=token
            )
            found.extend(page.items)
            token = page.next_token
            if token is None:
                return found

    async def all_sandboxes(
        self, caller: Caller, *, ref: str | None = None
    ) -> list[tuple[Team, Sandbox]]:
        """An admin's view: every team's live sandboxes (or one team's), by team."""
        KeyService.require_admin(caller, action="Listing every team's sandboxes")
        chosen = [await self.resolve(ref)] if ref else await self._teams.list_teams()
        return [(team, s) for team in chosen for s in await self._live_of(team.id)]

    async def kill_team_sandboxes(self, caller: Caller, *, ref: str) -> tuple[int, int]:
        """``POST /admin/teams/{teamID}/sandboxes/kill``: kill every live (running, paused or
        in between) sandbox of the team; ``(killed, failed)``. One killed meanwhile by
        someone else is neither; one whose kill errs is failed (logged) and the rest go on."""
        KeyService.require_admin(caller, action="Killing a team's sandboxes")
        team = await self.resolve(ref)
        killed = failed = 0
        if self._cleanup is not None:
            for sandbox in await self._live_of(team.id):
                try:
                    await self._cleanup.kill_sandbox(team.id, sandbox.id)
                    killed += 1
                except NotFoundError:
                    pass  # killed meanwhile
                except Exception:
                    _log.exception("killing sandbox %s of team %s failed", sandbox.id, team.id)
                    failed += 1
        _audit.info(
            "admin key %s killed the sandboxes of team %s (%s): %d killed, %d failed",
            caller.key.id, team.id, team.name, killed, failed,
        )  # fmt: skip
        return killed, failed

    async def cancel_team_builds(self, caller: Caller, *, ref: str) -> tuple[int, int]:
        """``POST /admin/teams/{teamID}/builds/cancel``: cancel every pending and running
        template build of the team; ``(cancelled, failed)``."""
        KeyService.require_admin(caller, action="Cancelling a team's builds")
        team = await self.resolve(ref)
        cancel = self._cleanup.cancel_builds if self._cleanup is not None else None
        if cancel is None:
            raise UnavailableError("this server does not build templates")
        cancelled, failed = await cancel(team.id)
        _audit.info(
            "admin key %s cancelled the builds of team %s (%s): %d cancelled, %d failed",
            caller.key.id, team.id, team.name, cancelled, failed,
        )  # fmt: skip
        return cancelled, failed

    async def running_counts(self, caller: Caller) -> dict[TeamID, int]:
        """``GET /admin/sandboxes/running-counts``: per team with any, its sandboxes that
        are running or on their way in or out of running (creating, resuming, pausing)."""
        KeyService.require_admin(caller, action="Counting every team's sandboxes")
        counts: dict[TeamID, int] = {}
        for team_id, _alias, state, count in await self._sandboxes.count_live():
            if state in RUNNING_STATES:
                counts[team_id] = counts.get(team_id, 0) + count
        return counts

    async def _kill_all(self, team_id: TeamID) -> int:
        """Kill every live sandbox of the team (one pass over the listing's pages)."""
        assert self._cleanup is not None
        ids = [s.id for s in await self._live_of(team_id)]
        killed = 0
        for sandbox_id in ids:
            with contextlib.suppress(NotFoundError):  # killed meanwhile
                await self._cleanup.kill_sandbox(team_id, sandbox_id)
                killed += 1
        return killed

    # -- keys of any team ------------------------------------------------------------------

    async def create_key(
        self, caller: Caller, *, ref: str, name: str, admin: bool = False
    ) -> CreatedApiKey:
        """``POST /admin/teams/{teamID}/api-keys``: a key of the team (``admin``: with the
        admin role)."""
        KeyService.require_admin(caller, action="Creating a key of a team")
        team = await self.resolve(ref)
        if not name.strip() or len(name) > 255:
            raise InvalidArgumentError("name must be 1 to 255 characters")
        created = await self._keys.create_api_key(team.id, name=name, admin=admin)
        _audit.info(
            "admin key %s created %s key %s of team %s",
            caller.key.id, "admin" if admin else "member", created.api_key.id, team.id,
        )  # fmt: skip
        return created

    async def list_keys(self, caller: Caller, *, ref: str) -> list[ApiKey]:
        KeyService.require_admin(caller, action="Listing a team's keys")
        team = await self.resolve(ref)
        return await self._keys.list_api_keys(team.id)

    async def delete_key(self, caller: Caller, *, ref: str, key_id: str) -> None:
        """``DELETE /admin/teams/{teamID}/api-keys/{apiKeyID}``."""
        KeyService.require_admin(caller, action="Revoking a key of a team")
        team = await self.resolve(ref)
        try:
            checked = str(uuid.UUID(key_id))
        except ValueError:
            raise InvalidArgumentError(
                f"Error when parsing API key ID: invalid UUID {key_id!r}"
            ) from None
        try:
            await self._keys.delete_api_key(ApiKeyID(checked), team_id=team.id)
        except NotFoundError as exc:
            raise NotFoundError(
                f"API key {key_id} of team {team.id} not found", public_message="id not found"
            ) from exc
        _audit.info("admin key %s revoked key %s of team %s", caller.key.id, checked, team.id)
