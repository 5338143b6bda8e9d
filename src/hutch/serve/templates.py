"""Seeding the store's template rows from the templates published on disk.

The node owns the artifacts (``<home>/templates/<name>``); the api owns the rows users see
in ``GET /templates`` and create from. ``hutch serve`` bridges them at startup: each
artifact gets a public, ``ready`` row of the default team with id = alias = its name, so
the node can be handed ``spec.template_id`` as the artifact's name. Existing rows are kept
(idempotent restarts).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from hutch.api.app import ApiStore
from hutch.api.models import NewTemplate, TemplateBuildState
from hutch.api.service.templates import TemplateService
from hutch.node.templates.artifact import DirTemplateStore, TemplateArtifact
from hutch.serve.template_builder import LocalTemplateBuilder
from hutch.shared.ids import TeamID, TemplateID

if TYPE_CHECKING:
    from hutch.serve.settings import ServeSettings


async def seed_templates(store: ApiStore, artifacts: list[TemplateArtifact]) -> list[str]:
    """Create the rows missing for ``artifacts``; return the names that were added."""
    team = await store.teams.ensure_default_team()
    added = []
    for artifact in artifacts:
        if artifact.layers:
            continue  # a snapshot: its row is its team's, made with it (never public)
        if await store.templates.find_template_any_team(artifact.name) is not None:
            continue
        await store.templates.create_template(
            NewTemplate(
                team_id=team.id,
                id=TemplateID(artifact.name),
                alias=artifact.name,
                build_state=TemplateBuildState.READY,
                # The row's cpu is an integer (E2B's cpuCount); the node keeps the fraction.
                cpu_count=max(1, math.ceil(artifact.cpu_count)),
                memory_mb=artifact.memory_mb,
                public=True,
            )
        )
        added.append(artifact.name)
    return added


# ---- the ``hutch template`` CLI: the same service the REST API uses, on the home directly --


async def cli_service(settings: ServeSettings) -> tuple[ApiStore, TemplateService, TeamID]:
    """The template service over ``settings``' home (store migrated), and the default team.

    The caller closes the store (``await store.close()``).
    """
    from hutch.api.store.sql import open_sql_store

    api = settings.api_settings()
    node = settings.node_settings()
    api.home.mkdir(parents=True, exist_ok=True)
    store = await open_sql_store(api.effective_database_url(), migrate=True)
    try:
        builder = LocalTemplateBuilder(
            templates_dir=node.templates_dir, envd_bundle=node.envd_bundle_path,
            shared_templates=node.shared_templates_dirs,
        )  # fmt: skip
        team = await store.teams.ensure_default_team()
        # Templates published on disk before (busybox, base) get their rows, as serve does.
        on_disk = DirTemplateStore(node.templates_dir, shared=node.shared_templates_dirs)
        await seed_templates(store, await on_disk.list())
    except BaseException:
        await store.close()
        raise
    return store, TemplateService(templates=store.templates, builder=builder), team.id
