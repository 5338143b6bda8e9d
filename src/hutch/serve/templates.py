"""Seeding the store's template rows from the templates published on disk.

The node owns the artifacts (``<home>/templates/<name>``); the api owns the rows users see
in ``GET /templates`` and create from. ``hutch serve`` bridges them at startup: each
artifact gets a public, ``ready`` row of the default team with id = alias = its name, so
the node can be handed ``spec.template_id`` as the artifact's name. Existing rows are kept
(idempotent restarts).
"""

from __future__ import annotations

import math

from hutch.api.app import ApiStore
from hutch.api.models import NewTemplate, TemplateBuildState
from hutch.node.templates.artifact import TemplateArtifact
from hutch.shared.ids import TemplateID


async def seed_templates(
    store: ApiStore, artifacts: list[TemplateArtifact], *, default_disk_mb: int = 1024
) -> list[str]:
    """Create the rows missing for ``artifacts``; return the names that were added.

    A row's ``disk_mb`` is the artifact's, else the node's ``default_disk_mb``: what its
    sandboxes get (ADR 0023), so ``diskSizeMB`` reports the limit in force.
    """
    team = await store.teams.ensure_default_team()
    added = []
    for artifact in artifacts:
        if artifact.layers:
            continue  # a snapshot: its row is its team's, made with it (never public)
        if await store.templates.find_template_any_team(artifact.name) is not None:
            continue
        alias = artifact.alias or artifact.name
        if alias != artifact.name and await store.templates.find_template_any_team(alias):
            alias = artifact.name  # taken (another template's id or alias): its name only
        await store.templates.create_template(
            NewTemplate(
                team_id=team.id,
                id=TemplateID(artifact.name),
                alias=alias,
                build_state=TemplateBuildState.READY,
                # The row's cpu is an integer (E2B's cpuCount); the node keeps the fraction.
                cpu_count=max(1, math.ceil(artifact.cpu_count)),
                memory_mb=artifact.memory_mb,
                disk_mb=artifact.disk_mb or default_disk_mb,
                public=True,
            )
        )
        added.append(artifact.name)
    return added
