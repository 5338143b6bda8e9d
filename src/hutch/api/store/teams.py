"""Teams: the tenants. A default team exists on every installation."""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from hutch.api.models import QUOTA_FIELDS, Team, TeamQuotas
from hutch.api.store.base import Clock, utc_now
from hutch.api.store.engine import read_transaction, write_transaction
from hutch.api.store.errors import is_unique_violation
from hutch.api.store.tables import teams
from hutch.shared.errors import AlreadyExistsError, NotFoundError
from hutch.shared.ids import TeamID, new_team_id

#: The name of the team that ``hutch keys create`` issues keys for by default.
DEFAULT_TEAM_NAME: Final = "default"


def _team(row: Any) -> Team:
    return Team(id=TeamID(row.id), name=row.name, created_at=row.created_at)


class SqlTeamStore:
    """:class:`~hutch.api.store.base.TeamStore` on SQL."""

    def __init__(self, engine: AsyncEngine, *, clock: Clock = utc_now) -> None:
        self._engine = engine
        self._clock = clock

    async def create_team(self, *, name: str, team_id: TeamID | None = None) -> Team:
        """Create a team; :class:`AlreadyExistsError` if the name is taken."""
        team = Team(id=team_id or new_team_id(), name=name, created_at=self._clock())
        try:
            async with write_transaction(self._engine) as conn:
                await conn.execute(
                    teams.insert().values(id=team.id, name=name, created_at=team.created_at)
                )
        except IntegrityError as exc:
            if is_unique_violation(exc):
                raise AlreadyExistsError(f"team {name!r} already exists") from exc
            raise
        return team

    async def ensure_default_team(self) -> Team:
        """The default team, created on first call; safe to call concurrently."""
        found = await self.find_team_by_name(DEFAULT_TEAM_NAME)
        if found is not None:
            return found
        try:
            return await self.create_team(name=DEFAULT_TEAM_NAME)
        except AlreadyExistsError:
            # Another process created it between our read and our insert.
            return await self.get_team_by_name(DEFAULT_TEAM_NAME)

    async def find_team(self, team_id: TeamID) -> Team | None:
        """The team with this id, or ``None``."""
        async with read_transaction(self._engine) as conn:
            row = (await conn.execute(select(teams).where(teams.c.id == team_id))).first()
        return _team(row) if row is not None else None

    async def get_team(self, team_id: TeamID) -> Team:
        """The team with this id; :class:`NotFoundError` if there is none."""
        team = await self.find_team(team_id)
        if team is None:
            raise NotFoundError(f"team {team_id} not found")
        return team

    async def find_team_by_name(self, name: str) -> Team | None:
        """The team with this name, or ``None``."""
        async with read_transaction(self._engine) as conn:
            row = (await conn.execute(select(teams).where(teams.c.name == name))).first()
        return _team(row) if row is not None else None

    async def get_team_by_name(self, name: str) -> Team:
        """The team with this name; :class:`NotFoundError` if there is none."""
        team = await self.find_team_by_name(name)
        if team is None:
            raise NotFoundError(f"team {name!r} not found")
        return team

    async def list_teams(self) -> list[Team]:
        """Every team, oldest first."""
        async with read_transaction(self._engine) as conn:
            rows = await conn.execute(select(teams).order_by(teams.c.created_at, teams.c.id))
            return [_team(r) for r in rows]

    async def get_quotas(self, team_id: TeamID) -> TeamQuotas:
        """The team's stored overrides (``None``: the default); :class:`NotFoundError`."""
        cols = [teams.c[name] for name in QUOTA_FIELDS]
        async with read_transaction(self._engine) as conn:
            row = (await conn.execute(select(*cols).where(teams.c.id == team_id))).first()
        if row is None:
            raise NotFoundError(f"team {team_id} not found")
        return TeamQuotas(**{name: row[i] for i, name in enumerate(QUOTA_FIELDS)})

    async def set_quotas(self, team_id: TeamID, changes: dict[str, int | None]) -> TeamQuotas:
        """Set some overrides (``None``: back to the default); the overrides after."""
        unknown = set(changes) - set(QUOTA_FIELDS)
        assert not unknown, unknown
        if changes:
            async with write_transaction(self._engine) as conn:
                result = await conn.execute(
                    update(teams).where(teams.c.id == team_id).values(**changes)
                )
            if result.rowcount == 0:
                raise NotFoundError(f"team {team_id} not found")
        return await self.get_quotas(team_id)

    async def delete_team(self, team_id: TeamID) -> None:
        """Delete a team and, by cascade, everything it owns."""
        async with write_transaction(self._engine) as conn:
            result = await conn.execute(delete(teams).where(teams.c.id == team_id))
        if result.rowcount == 0:
            raise NotFoundError(f"team {team_id} not found")
