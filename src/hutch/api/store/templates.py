"""Templates (minimal for now): id, alias, build state, resource defaults, visibility.

Aliases are globally unique, as on E2B. A team sees its own templates and public ones;
another team's private template is not found (the HTTP layer turns "exists but not yours"
into 403 for ``GET /templates/aliases/{alias}`` with :meth:`find_template_any_team`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from hutch.api.models import NewTemplate, Template, TemplateBuildState, TemplateTag
from hutch.api.store.base import Clock, utc_now
from hutch.api.store.engine import read_transaction, write_transaction
from hutch.api.store.errors import is_foreign_key_violation, is_unique_violation
from hutch.api.store.tables import template_tags, templates
from hutch.shared.errors import AlreadyExistsError, NotFoundError
from hutch.shared.ids import TeamID, TemplateID, new_template_id


def _template(row: Any) -> Template:
    return Template(
        id=TemplateID(row.id),
        team_id=TeamID(row.team_id),
        alias=row.alias,
        build_state=TemplateBuildState(row.build_state),
        cpu_count=row.cpu_count,
        memory_mb=row.memory_mb,
        disk_mb=row.disk_mb,
        envd_version=row.envd_version,
        public=bool(row.public),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class SqlTemplateStore:
    """:class:`~hutch.api.store.base.TemplateStore` on SQL."""

    def __init__(self, engine: AsyncEngine, *, clock: Clock = utc_now) -> None:
        self._engine = engine
        self._clock = clock

    async def create_template(self, new: NewTemplate) -> Template:
        """Record a template; a taken alias or id is :class:`AlreadyExistsError`."""
        now = self._clock()
        row = {
            "id": new.id or new_template_id(),
            "team_id": new.team_id,
            "alias": new.alias,
            "build_state": new.build_state.value,
            "cpu_count": new.cpu_count,
            "memory_mb": new.memory_mb,
            "disk_mb": new.disk_mb,
            "envd_version": new.envd_version,
            "public": new.public,
            "created_at": now,
            "updated_at": now,
        }
        try:
            async with write_transaction(self._engine) as conn:
                await conn.execute(templates.insert().values(**row))
                created = (
                    await conn.execute(select(templates).where(templates.c.id == row["id"]))
                ).one()
        except IntegrityError as exc:
            if is_foreign_key_violation(exc):
                raise NotFoundError(f"team {new.team_id} not found") from exc
            if is_unique_violation(exc):
                raise AlreadyExistsError(
                    f"template {new.alias or row['id']!r} already exists"
                ) from exc
            raise
        return _template(created)

    async def find_template_any_team(self, id_or_alias: str) -> Template | None:
        """The template with this id or alias, whoever owns it (internal callers only)."""
        t = templates.c
        query = select(templates).where(or_(t.id == id_or_alias, t.alias == id_or_alias))
        async with read_transaction(self._engine) as conn:
            rows = list(await conn.execute(query))
        # An id equal to another template's alias: the id wins, as on E2B.
        rows.sort(key=lambda r: r.id != id_or_alias)
        return _template(rows[0]) if rows else None

    async def find_template(self, id_or_alias: str, *, team_id: TeamID) -> Template | None:
        """The template by id or alias if ``team_id`` owns it or it is public."""
        found = await self.find_template_any_team(id_or_alias)
        if found is None or (found.team_id != team_id and not found.public):
            return None
        return found

    async def get_template(self, id_or_alias: str, *, team_id: TeamID) -> Template:
        """Like :meth:`find_template`, raising :class:`NotFoundError` instead of ``None``."""
        found = await self.find_template(id_or_alias, team_id=team_id)
        if found is None:
            raise NotFoundError(f"template {id_or_alias!r} not found")
        return found

    async def list_templates(self, *, team_id: TeamID) -> list[Template]:
        """The team's own templates, oldest first."""
        query = (
            select(templates)
            .where(templates.c.team_id == team_id)
            .order_by(templates.c.created_at, templates.c.id)
        )
        async with read_transaction(self._engine) as conn:
            return [_template(r) for r in await conn.execute(query)]

    async def set_build_state(
        self,
        template_id: TemplateID,
        state: TemplateBuildState,
        *,
        envd_version: str | None = None,
    ) -> Template:
        """Record a build's progress (and, once built, the envd version inside)."""
        values: dict[str, Any] = {"build_state": state.value, "updated_at": self._clock()}
        if envd_version is not None:
            values["envd_version"] = envd_version
        async with write_transaction(self._engine) as conn:
            result = await conn.execute(
                update(templates).where(templates.c.id == template_id).values(**values)
            )
            if result.rowcount == 0:
                raise NotFoundError(f"template {template_id} not found")
            row = (await conn.execute(select(templates).where(templates.c.id == template_id))).one()
        return _template(row)

    async def set_public(
        self, template_id: TemplateID, *, team_id: TeamID, public: bool
    ) -> Template:
        """Publish (or unpublish) one of the team's templates; others' are
        :class:`NotFoundError`."""
        async with write_transaction(self._engine) as conn:
            result = await conn.execute(
                update(templates)
                .where(templates.c.id == template_id, templates.c.team_id == team_id)
                .values(public=public, updated_at=self._clock())
            )
            if result.rowcount == 0:
                raise NotFoundError(f"template {template_id} not found")
            row = (await conn.execute(select(templates).where(templates.c.id == template_id))).one()
        return _template(row)

    async def delete_template(self, template_id: TemplateID, *, team_id: TeamID) -> None:
        """Delete one of the team's templates; others' are :class:`NotFoundError`."""
        async with write_transaction(self._engine) as conn:
            result = await conn.execute(
                delete(templates).where(
                    templates.c.id == template_id, templates.c.team_id == team_id
                )
            )
        if result.rowcount == 0:
            raise NotFoundError(f"template {template_id} not found")

    # ---- tags (E2B's ``name:tag``) ----------------------------------------------------------

    async def set_tags(self, template_id: TemplateID, tags: list[str], build_id: str) -> None:
        """Point each of ``tags`` at ``build_id`` (moving a tag that pointed elsewhere)."""
        now = self._clock()
        tt = template_tags.c
        for attempt in range(3):
            try:
                async with write_transaction(self._engine) as conn:
                    for tag in dict.fromkeys(tags):
                        await conn.execute(
                            delete(template_tags).where(
                                tt.template_id == template_id, tt.tag == tag
                            )
                        )
                        await conn.execute(
                            template_tags.insert().values(
                                template_id=template_id, tag=tag, build_id=build_id,
                                created_at=now,
                            )
                        )  # fmt: skip
                return
            except IntegrityError as exc:
                if is_foreign_key_violation(exc):  # the template was deleted meanwhile
                    raise NotFoundError(f"template {template_id} not found") from exc
                if not is_unique_violation(exc) or attempt == 2:
                    raise
                # A concurrent assignment of the same tag inserted first: write again.

    async def list_tags(self, template_id: TemplateID) -> list[TemplateTag]:
        """The template's tags, by name."""
        tt = template_tags.c
        query = select(template_tags).where(tt.template_id == template_id).order_by(tt.tag)
        async with read_transaction(self._engine) as conn:
            return [
                TemplateTag(
                    template_id=TemplateID(r.template_id),
                    tag=r.tag,
                    build_id=r.build_id,
                    created_at=r.created_at,
                )
                for r in await conn.execute(query)
            ]

    async def delete_tags(self, template_id: TemplateID, tags: list[str]) -> None:
        """Remove ``tags``: all or none; an unassigned one is :class:`NotFoundError`."""
        tt = template_tags.c
        async with write_transaction(self._engine) as conn:
            present = {
                r.tag
                for r in await conn.execute(
                    select(tt.tag).where(tt.template_id == template_id, tt.tag.in_(tags))
                )
            }
            missing = [t for t in tags if t not in present]
            if missing:
                raise NotFoundError(
                    f"template {template_id!r} has no tag {missing[0]!r}",
                    public_message=f"Tag '{missing[0]}' of template '{template_id}' not found",
                )
            await conn.execute(
                delete(template_tags).where(tt.template_id == template_id, tt.tag.in_(tags))
            )
