"""E2B template tags: ``name:tag`` names one build of a step-built template.

A build records its tags when it succeeds (the request's ``tags`` plus a ``:tag`` in its
name; ``default`` when it names none, as E2B does). A tag points at that build's kept
version on the node (``name@build``), so ``Sandbox.create("name:v1")`` starts that version
even after newer builds. ``name`` alone means ``name:default`` when the template has that
tag, else the current version (imported templates carry no tags). Tags move with
``POST /templates/tags`` and go with ``DELETE /templates/tags``; a failed build moves none.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from hutch.api.models import Template, TemplateTag
from hutch.api.store.base import TemplateStore
from hutch.shared.errors import InvalidArgumentError, NotFoundError
from hutch.shared.ids import TeamID

DEFAULT_TAG: Final = "default"
#: What a tag may be: it ends up in a node name (``name@build`` is keyed by the build, not
#: the tag) and in URLs; E2B's tags are short slugs too.
_TAG_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_tags(tags: Iterable[str]) -> list[str]:
    """``tags`` without duplicates, each valid; ``InvalidArgumentError`` names a bad one."""
    out: list[str] = []
    for tag in tags:
        if not isinstance(tag, str) or not _TAG_RE.match(tag):
            raise InvalidArgumentError(
                f"invalid tag {tag!r}: want [A-Za-z0-9._-], 1-128, starting alphanumeric"
            )
        if tag not in out:
            out.append(tag)
    return out


def split_tag(name: str) -> tuple[str, str | None]:
    """``"name:tag"`` → ``("name", "tag")``; ``"name"`` → ``("name", None)``."""
    base, sep, tag = name.partition(":")
    if sep and not tag:
        raise InvalidArgumentError(f"invalid template name {name!r}: empty tag")
    if sep:
        check_tags([tag])
    return base, tag if sep else None


class TemplateTagService:
    """Assign, remove, list and resolve tags over the store."""

    def __init__(self, *, templates: TemplateStore) -> None:
        self._templates = templates

    async def _own(self, name: str, *, team_id: TeamID) -> Template:
        found = await self._templates.find_template(name, team_id=team_id)
        if found is None or found.team_id != team_id:
            raise NotFoundError(
                f"template {name!r} not found", public_message=f"Template '{name}' not found"
            )
        return found

    async def resolve(self, name: str, *, team_id: TeamID) -> tuple[str, str | None]:
        """``(template id or alias, build id)`` for ``name[:tag]``; build None: current.

        An unknown tag is ``NotFoundError``; a template the team cannot see is left to the
        caller's own lookup (``(name, None)``).
        """
        base, tag = split_tag(name)
        found = await self._templates.find_template(base, team_id=team_id)
        if found is None:
            if tag is not None:
                raise NotFoundError(
                    f"template {base!r} not found", public_message=f"Template '{base}' not found"
                )
            return base, None
        tags = {t.tag: t for t in await self._templates.list_tags(found.id)}
        if tag is None:
            default = tags.get(DEFAULT_TAG)
            return base, default.build_id if default is not None else None
        if tag not in tags:
            raise NotFoundError(
                f"template {base!r} has no tag {tag!r}",
                public_message=f"Tag '{tag}' of template '{base}' not found",
            )
        return base, tags[tag].build_id

    async def assign(self, target: str, tags: list[str], *, team_id: TeamID) -> str:
        """Point ``tags`` at the build ``target`` (``name[:tag]``) names; its build id."""
        tags = check_tags(tags)
        if not tags:
            raise InvalidArgumentError("tags: give at least one tag")
        base, tag = split_tag(target)
        template = await self._own(base, team_id=team_id)
        existing = {t.tag: t for t in await self._templates.list_tags(template.id)}
        source = existing.get(tag or DEFAULT_TAG)
        if source is None:
            raise NotFoundError(
                f"template {base!r} has no tag {tag or DEFAULT_TAG!r}",
                public_message=f"Tag '{tag or DEFAULT_TAG}' of template '{base}' not found",
            )
        await self._templates.set_tags(template.id, tags, source.build_id)
        return source.build_id

    async def remove(self, name: str, tags: list[str], *, team_id: TeamID) -> None:
        """Remove ``tags`` from template ``name`` (all or none)."""
        tags = check_tags(tags)
        if not tags:
            raise InvalidArgumentError("tags: give at least one tag")
        base, tag = split_tag(name)
        if tag is not None:
            raise InvalidArgumentError(f"name {name!r}: give the template's name without a tag")
        template = await self._own(base, team_id=team_id)
        await self._templates.delete_tags(template.id, tags)

    async def list(self, name: str, *, team_id: TeamID) -> list[TemplateTag]:
        """The tags of one of the team's templates."""
        template = await self._own(name, team_id=team_id)
        return await self._templates.list_tags(template.id)
