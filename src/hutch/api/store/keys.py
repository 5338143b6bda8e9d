"""API keys: ``e2b_`` + 40 lowercase hex, stored only as their SHA-256.

The plaintext exists once, in :class:`~hutch.api.models.CreatedApiKey`. Lookup hashes the
presented key and finds the row by the (unique, indexed) hash, so the database compares
digests of secrets, never secrets: timing reveals nothing about a valid key. The digests
are compared once more with :func:`hmac.compare_digest` as a belt to those braces.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from types import SimpleNamespace
from typing import Any, Final

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from hutch.api.models import ApiKey, CreatedApiKey, Team
from hutch.api.store.base import Clock, utc_now
from hutch.api.store.engine import read_transaction, write_transaction
from hutch.api.store.errors import is_foreign_key_violation
from hutch.api.store.tables import api_keys, teams
from hutch.shared.errors import NotFoundError, UnauthenticatedError
from hutch.shared.ids import ApiKeyID, TeamID, new_api_key_id

API_KEY_PREFIX: Final = "e2b_"
_API_KEY_RE: Final = re.compile(r"^e2b_[0-9a-f]{40}$")


def generate_api_key() -> str:
    """A new key: ``e2b_`` + 40 lowercase hex characters (20 random bytes), as E2B's."""
    return API_KEY_PREFIX + secrets.token_hex(20)


def hash_api_key(key: str) -> str:
    """The SHA-256 hex digest the store keeps instead of ``key``."""
    return hashlib.sha256(key.encode()).hexdigest()


def mask_api_key(key: str) -> str:
    """A display form: the prefix, the first 2 and the last 4 characters (E2B's shape)."""
    body = key.removeprefix(API_KEY_PREFIX)
    return f"{API_KEY_PREFIX}{body[:2]}…{body[-4:]}"


def is_well_formed_api_key(key: str) -> bool:
    """Whether ``key`` looks like a hutch/E2B key (cheap reject before any lookup)."""
    return _API_KEY_RE.fullmatch(key) is not None


def _api_key(row: Any) -> ApiKey:
    return ApiKey(
        id=ApiKeyID(row.id),
        team_id=TeamID(row.team_id),
        name=row.name,
        mask=row.mask,
        created_at=row.created_at,
        admin=bool(row.admin),
    )


class SqlApiKeyStore:
    """:class:`~hutch.api.store.base.ApiKeyStore` on SQL."""

    def __init__(self, engine: AsyncEngine, *, clock: Clock = utc_now) -> None:
        self._engine = engine
        self._clock = clock

    async def create_api_key(
        self, team_id: TeamID, *, name: str = "", admin: bool = False
    ) -> CreatedApiKey:
        """Issue a key for ``team_id`` (``admin``: with the admin role); the result carries
        the only copy of the plaintext."""
        secret = generate_api_key()
        row = {
            "id": new_api_key_id(),
            "team_id": team_id,
            "key_hash": hash_api_key(secret),
            "mask": mask_api_key(secret),
            "name": name,
            "created_at": self._clock(),
            "admin": admin,
        }
        try:
            async with write_transaction(self._engine) as conn:
                await conn.execute(api_keys.insert().values(**row))
        except IntegrityError as exc:
            if is_foreign_key_violation(exc):
                raise NotFoundError(f"team {team_id} not found") from exc
            raise
        return CreatedApiKey(api_key=_api_key(SimpleNamespace(**row)), secret=secret)

    async def find_team_by_api_key(self, key: str) -> Team | None:
        """The team owning ``key``, or ``None`` for an unknown or malformed key."""
        found = await self.find_caller(key)
        return found[0] if found is not None else None

    async def find_caller(self, key: str) -> tuple[Team, ApiKey] | None:
        """The team owning ``key`` and the key's record (its id and role), or ``None`` for
        an unknown or malformed key (a deleted team's keys went with it: ``None``)."""
        if not is_well_formed_api_key(key):
            return None
        digest = hash_api_key(key)
        query = (
            select(
                teams.c.id.label("t_id"),
                teams.c.name.label("t_name"),
                teams.c.created_at.label("t_created_at"),
                api_keys,
            )
            .join(api_keys, api_keys.c.team_id == teams.c.id)
            .where(api_keys.c.key_hash == digest)
        )
        async with read_transaction(self._engine) as conn:
            row = (await conn.execute(query)).first()
        if row is None or not hmac.compare_digest(row.key_hash, digest):
            return None
        team = Team(id=TeamID(row.t_id), name=row.t_name, created_at=row.t_created_at)
        return team, _api_key(row)

    async def get_team_by_api_key(self, key: str) -> Team:
        """The team owning ``key``; :class:`UnauthenticatedError` if none does."""
        team = await self.find_team_by_api_key(key)
        if team is None:
            raise UnauthenticatedError("invalid API key", public_message="Invalid API key")
        return team

    async def list_api_keys(self, team_id: TeamID) -> list[ApiKey]:
        """The team's keys (masked), oldest first."""
        query = (
            select(api_keys)
            .where(api_keys.c.team_id == team_id)
            .order_by(api_keys.c.created_at, api_keys.c.id)
        )
        async with read_transaction(self._engine) as conn:
            return [_api_key(r) for r in await conn.execute(query)]

    async def delete_api_key(self, key_id: ApiKeyID, *, team_id: TeamID) -> None:
        """Revoke a key of ``team_id``; another team's key is :class:`NotFoundError`."""
        async with write_transaction(self._engine) as conn:
            result = await conn.execute(
                delete(api_keys).where(api_keys.c.id == key_id, api_keys.c.team_id == team_id)
            )
        if result.rowcount == 0:
            raise NotFoundError(f"API key {key_id} not found")

    async def rename_api_key(self, key_id: str, *, team_id: TeamID, name: str) -> ApiKey:
        """Rename a key of ``team_id``; another team's or an unknown key is
        :class:`NotFoundError`."""
        async with write_transaction(self._engine) as conn:
            result = await conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.team_id == team_id)
                .values(name=name)
            )
            if result.rowcount == 0:
                raise NotFoundError(f"API key {key_id} not found")
            row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).one()
        return _api_key(row)
