"""``create_key(home)``: a new API key for the default team, straight through the store."""

from __future__ import annotations

from hutch.api.models import CreatedApiKey
from hutch.api.service.keys import KeyService
from hutch.api.store.sql import open_sql_store
from hutch.serve.settings import ServeSettings


async def create_key(settings: ServeSettings, *, name: str = "") -> CreatedApiKey:
    """Create the key in the database of ``settings``' home (migrating it when new)."""
    api = settings.api_settings()
    api.home.mkdir(parents=True, exist_ok=True)
    store = await open_sql_store(api.effective_database_url(), migrate=True)
    try:
        return await KeyService(teams=store.teams, keys=store.keys).create_key(name=name)
    finally:
        await store.close()
