"""Templates as the API lists them (building them is issue 6's)."""

from __future__ import annotations

from hutch.api.models import Template
from hutch.api.store.base import TemplateStore
from hutch.shared.ids import TeamID


class TemplateService:
    """Read access to a team's templates (its own and public ones)."""

    def __init__(self, *, templates: TemplateStore) -> None:
        self._templates = templates

    async def list_templates(self, *, team_id: TeamID) -> list[Template]:
        """The templates the team may start sandboxes from, as the store orders them."""
        return await self._templates.list_templates(team_id=team_id)
