"""Teams and API keys: who a request is, and how keys are made, listed, renamed, revoked.

Two ways to say who you are, as E2B's API has them: ``X-API-Key`` (the SDK, every
sandbox and template route) and ``Authorization: Bearer`` (E2B's CLI and dashboard, on
``/teams`` and ``/api-keys``). E2B's bearer is a user's access token; hutch has no users,
so the bearer is an API key of the team, and ``/api-keys`` also takes ``X-API-Key``:
whoever holds a key of a team speaks for it. A key has one of two roles (ADR 0015):
member (its team only) or admin (also the ``/admin/...`` routes, every team);
:meth:`KeyService.require_admin` is the one check.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Final

from hutch.api.models import ApiKey, CreatedApiKey, Team
from hutch.api.service.ratelimit import RateLimiter
from hutch.api.store.base import ApiKeyStore, TeamStore
from hutch.shared.errors import (
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from hutch.shared.ids import ApiKeyID, TeamID

#: The name E2B gives the key ``GET /teams`` issues for its CLI (``teams.go``).
CLI_KEY_NAME: Final = "CLI login/configure"
MAX_KEY_NAME: Final = 255


def _key_not_found(key_id: str) -> NotFoundError:
    return NotFoundError(f"API key {key_id} not found", public_message="id not found")


def _check_key_id(key_id: str) -> str:
    try:
        return str(uuid.UUID(key_id))
    except ValueError:
        raise InvalidArgumentError(
            f"Error when parsing API key ID: invalid UUID {key_id!r}"
        ) from None


def _check_name(name: str) -> str:
    if not name.strip() or len(name) > MAX_KEY_NAME:
        raise InvalidArgumentError(f"name must be 1 to {MAX_KEY_NAME} characters")
    return name


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a request is: the key's team and the key itself (its id and role)."""

    team: Team
    key: ApiKey

    @property
    def admin(self) -> bool:
        return self.key.admin


class KeyService:
    """Authenticates callers and manages a team's keys."""

    def __init__(
        self, *, teams: TeamStore, keys: ApiKeyStore, limiter: RateLimiter | None = None
    ) -> None:
        self._teams = teams
        self._keys = keys
        self._limiter = limiter

    async def authenticate(self, *, api_key: str | None) -> Team:
        """The team owning ``api_key``; :class:`UnauthenticatedError` if none does."""
        return (await self.authenticate_caller(api_key=api_key)).team

    async def authenticate_caller(self, *, api_key: str | None) -> Caller:
        """The key and its team; :class:`UnauthenticatedError` if no team owns it (a
        revoked key, or a key of a deleted team)."""
        if not api_key:
            raise UnauthenticatedError(
                "missing API key", public_message="Missing API key: set the X-API-Key header"
            )
        found = await self._keys.find_caller(api_key)
        if found is None:
            raise UnauthenticatedError("invalid API key", public_message="Invalid API key")
        caller = Caller(*found)
        if self._limiter is not None:
            self._limiter.take(caller.key.id)
        return caller

    @staticmethod
    def require_admin(caller: Caller, *, action: str) -> Caller:
        """``caller`` if its key has the admin role, else :class:`PermissionDeniedError`
        (403) naming what was refused."""
        if not caller.admin:
            raise PermissionDeniedError(
                f"key {caller.key.id} of team {caller.team.id} is not an admin ({action})",
                public_message=f"{action} needs an admin API key; key {caller.key.mask} is a "
                f"member key of team '{caller.team.name}' (make one with "
                "'hutch keys create --admin')",
            )
        return caller

    async def authenticate_user(
        self, *, authorization: str | None, api_key: str | None = None
    ) -> Team:
        """The team a CLI/dashboard caller speaks for: ``Authorization: Bearer <key>``,
        else ``X-API-Key`` when given (see the module docstring)."""
        if authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise UnauthenticatedError(
                    "malformed Authorization header",
                    public_message="Invalid Authorization header: expected 'Bearer <token>'",
                )
            found = await self._keys.find_caller(token.strip())
            if found is None:
                raise UnauthenticatedError(
                    "invalid bearer token", public_message="Invalid access token"
                )
            if self._limiter is not None:
                self._limiter.take(found[1].id)
            return found[0]
        if api_key:
            return await self.authenticate(api_key=api_key)
        raise UnauthenticatedError(
            "missing credentials",
            public_message="Missing access token: set Authorization: Bearer <API key>",
        )

    async def create_key(
        self, *, team_id: TeamID | None = None, name: str = "", admin: bool = False
    ) -> CreatedApiKey:
        """A new key for ``team_id`` (default: the default team, created if missing);
        ``admin``: with the admin role."""
        if team_id is None:
            team_id = (await self._teams.ensure_default_team()).id
        return await self._keys.create_api_key(team_id, name=name, admin=admin)

    async def create_named_key(self, *, team_id: TeamID, name: str) -> CreatedApiKey:
        """``POST /api-keys``: a new key of the team with a (required) name."""
        return await self._keys.create_api_key(team_id, name=_check_name(name))

    async def list_keys(self, *, team_id: TeamID) -> list[ApiKey]:
        """The team's keys, masked, oldest first."""
        return await self._keys.list_api_keys(team_id)

    async def rename_key(self, *, team_id: TeamID, key_id: str, name: str) -> ApiKey:
        """Rename one of the team's keys; another team's is not found."""
        checked = _check_key_id(key_id)
        try:
            return await self._keys.rename_api_key(checked, team_id=team_id, name=_check_name(name))
        except NotFoundError as exc:
            raise _key_not_found(key_id) from exc

    async def delete_key(self, *, team_id: TeamID, key_id: str) -> None:
        """Revoke one of the team's keys (the one in use too, as E2B allows)."""
        checked = _check_key_id(key_id)
        try:
            await self._keys.delete_api_key(ApiKeyID(checked), team_id=team_id)
        except NotFoundError as exc:
            raise _key_not_found(key_id) from exc

    async def teams_of(self, team: Team) -> list[tuple[Team, bool, CreatedApiKey]]:
        """``GET /teams``: the caller's teams (today: its one team), whether each is the
        default team, and a fresh key for each, as E2B issues one per call for its CLI."""
        default = await self._teams.ensure_default_team()
        key = await self._keys.create_api_key(team.id, name=CLI_KEY_NAME)
        return [(team, team.id == default.id, key)]
