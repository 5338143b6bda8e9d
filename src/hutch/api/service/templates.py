"""Templates: listing, publishing, deletion.

The store holds the rows users see (``GET /templates``) and create sandboxes from; the
:class:`~hutch.api.service.ports.TemplateBuilder` makes and removes the artifacts. Imports
from OCI images are jobs (``template_imports.py``): their row is written only after the
artifact is published.
"""

from __future__ import annotations

import base64
import binascii
import logging
from datetime import datetime

from hutch.api.models import Template
from hutch.api.service.keys import Caller, KeyService
from hutch.api.service.ports import TemplateBuilder
from hutch.api.store.base import TemplateStore
from hutch.shared.errors import (
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from hutch.shared.ids import TeamID

_audit = logging.getLogger("hutch.audit")


class TemplateService:
    """A team's templates (its own and public ones) and their lifecycle."""

    def __init__(self, *, templates: TemplateStore, builder: TemplateBuilder | None = None) -> None:
        self._templates = templates
        self._builder = builder

    async def list_templates(self, *, team_id: TeamID) -> list[Template]:
        """The templates the team may start sandboxes from, as the store orders them."""
        return await self._templates.list_templates(team_id=team_id)

    async def get_own(self, id_or_alias: str, *, team_id: TeamID) -> Template:
        """One of the team's own templates; another team's is not found, as an unknown
        one (``Template <id> not found``, infra's words)."""
        found = await self._templates.find_template(id_or_alias, team_id=team_id)
        if found is None or found.team_id != team_id:
            raise NotFoundError(
                f"template {id_or_alias!r} not found",
                public_message=f"Template {id_or_alias} not found",
            )
        return found

    async def set_public(self, id_or_alias: str, *, team_id: TeamID, public: bool) -> Template:
        """``PATCH /templates/{id}`` ``{public}``: one of the team's own templates, made
        visible to (or hidden from) every team."""
        found = await self.get_own(id_or_alias, team_id=team_id)
        return await self._templates.set_public(found.id, team_id=team_id, public=public)

    async def publish_any(self, caller: Caller, id_or_alias: str, *, public: bool) -> Template:
        """An admin publishes (or unpublishes) any team's template, so every team may start
        sandboxes from it; logged on ``hutch.audit`` with the key's id (ADR 0015)."""
        KeyService.require_admin(caller, action="Publishing a template of any team")
        found = await self._templates.find_template_any_team(id_or_alias)
        if found is None:
            raise NotFoundError(
                f"template {id_or_alias!r} not found",
                public_message=f"Template {id_or_alias} not found",
            )
        after = await self._templates.set_public(found.id, team_id=found.team_id, public=public)
        _audit.info(
            "admin key %s %s template %s of team %s",
            caller.key.id, "published" if public else "unpublished", found.id, found.team_id,
        )  # fmt: skip
        return after

    async def list_page(
        self, *, team_id: TeamID, limit: int = 100, next_token: str | None = None
    ) -> tuple[list[Template], str | None]:
        """``GET /v2/templates``: the team's own templates, newest first, ``limit`` at a
        time; the token names the last one given (infra's ``(createdAt, id)`` cursor)."""
        if not 1 <= limit <= 100:
            raise InvalidArgumentError("limit must be between 1 and 100")
        own = [t for t in await self._templates.list_templates(team_id=team_id)
               if t.team_id == team_id]  # fmt: skip
        own.sort(key=lambda t: (t.created_at, t.id), reverse=True)
        if next_token:
            after = _decode_cursor(next_token)
            own = [t for t in own if (t.created_at, t.id) < after]
        page = own[:limit]
        token = _encode_cursor(page[-1]) if len(own) > limit else None
        return page, token

    async def find_any(self, id_or_alias: str) -> Template | None:
        """The template by id or alias, whoever owns it (callers check visibility)."""
        return await self._templates.find_template_any_team(id_or_alias)

    async def delete_template(self, id_or_alias: str, *, team_id: TeamID) -> Template:
        """Delete one of the team's own templates: its row, then its files."""
        found = await self._templates.find_template(id_or_alias, team_id=team_id)
        if found is None or found.team_id != team_id:
            raise NotFoundError(
                f"template {id_or_alias!r} not found",
                public_message=f"Template '{id_or_alias}' not found",
            )
        builder = self._require_builder()
        await self._templates.delete_template(found.id, team_id=team_id)
        await builder.delete(found.id)
        return found

    def _require_builder(self) -> TemplateBuilder:
        if self._builder is None:
            raise UnavailableError("this server cannot build templates (no builder configured)")
        return self._builder


def _encode_cursor(template: Template) -> str:
    raw = f"{template.created_at.isoformat()}|{template.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(token: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        created, _, template_id = raw.partition("|")
        when = datetime.fromisoformat(created)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidArgumentError("Invalid next token") from None
    if not template_id or when.tzinfo is None:
        raise InvalidArgumentError("Invalid next token")
    return when, template_id
