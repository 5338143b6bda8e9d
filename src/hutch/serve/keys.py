"""``create_key(home)``: a new API key, straight through the store (no running serve needed).

``team`` names the team by name or id (default: the default team, made when missing);
``admin`` gives the key the admin role (ADR 0015). This is how the first admin key of an
installation comes to be: ``hutch keys create --admin`` as root on the host.
"""

from __future__ import annotations

from hutch.api.models import CreatedApiKey
from hutch.api.service.keys import KeyService
from hutch.api.store.sql import open_sql_store
from hutch.serve.settings import ServeSettings
from hutch.shared.errors import NotFoundError
from hutch.shared.ids import TeamID


async def create_key(
    settings: ServeSettings, *, name: str = "", team: str | None = None, admin: bool = False
) -> CreatedApiKey:
    """Create the key in the database of ``settings``' home (migrating it when new);
    :class:`NotFoundError` for an unknown ``team``."""
    api = settings.api_settings()
    api.home.mkdir(parents=True, exist_ok=True)
    store = await open_sql_store(api.effective_database_url(), migrate=True)
    try:
        team_id = None
        if team is not None:
            found = await store.teams.find_team(
                TeamID(team)
            ) or await store.teams.find_team_by_name(team)
            if found is None:
                raise NotFoundError(
                    f"team {team!r} not found", public_message=f"Team '{team}' not found"
                )
            team_id = found.id
        service = KeyService(teams=store.teams, keys=store.keys)
        return await service.create_key(team_id=team_id, name=name, admin=admin)
    finally:
        await store.close()
