"""Teams and API keys: who a request is, and how keys are made."""

from __future__ import annotations

from hutch.api.models import CreatedApiKey, Team
from hutch.api.store.base import ApiKeyStore, TeamStore
from hutch.shared.errors import UnauthenticatedError
from hutch.shared.ids import TeamID


class KeyService:
    """Authenticates ``X-API-Key`` values and creates keys."""

    def __init__(self, *, teams: TeamStore, keys: ApiKeyStore) -> None:
        self._teams = teams
        self._keys = keys

    async def authenticate(self, *, api_key: str | None) -> Team:
        """The team owning ``api_key``; :class:`UnauthenticatedError` if none does."""
        if not api_key:
            raise UnauthenticatedError(
                "missing API key", public_message="Missing API key: set the X-API-Key header"
            )
        team = await self._keys.find_team_by_api_key(api_key)
        if team is None:
            raise UnauthenticatedError("invalid API key", public_message="Invalid API key")
        return team

    async def create_key(self, *, team_id: TeamID | None = None, name: str = "") -> CreatedApiKey:
        """A new key for ``team_id`` (default: the default team, created if missing)."""
        if team_id is None:
            team_id = (await self._teams.ensure_default_team()).id
        return await self._keys.create_api_key(team_id, name=name)
