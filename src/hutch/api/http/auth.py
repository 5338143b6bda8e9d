"""Who is calling: ``X-API-Key`` → team, and the services a route may use.

The SDK sends ``X-API-KEY`` (header names are case-insensitive). ``GET /health`` is the
only route without a key. E2B's CLI and dashboard send ``Authorization: Bearer`` on
``/teams`` and ``/api-keys`` (:func:`authenticate_user`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request

from hutch.api.models import Team
from hutch.api.service.keys import Caller, KeyService
from hutch.api.service.metadata import MetadataService
from hutch.api.service.network import NetworkService
from hutch.api.service.node_status import NodeStatusSource
from hutch.api.service.pausing import PauseService
from hutch.api.service.sandboxes import SandboxService
from hutch.api.service.snapshots import SnapshotService
from hutch.api.service.teams import TeamService
from hutch.api.service.template_builds import TemplateBuildService
from hutch.api.service.template_imports import TemplateImportService
from hutch.api.service.template_tags import TemplateTagService
from hutch.api.service.templates import TemplateService
from hutch.api.service.usage import UsageSampler
from hutch.api.service.volumes import VolumeService
from hutch.shared import logging as hlog


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpContext:
    """What the routes need, set on ``app.state.ctx`` by ``app.py``."""

    sandboxes: SandboxService
    keys: KeyService
    templates: TemplateService
    metadata: MetadataService
    volumes: VolumeService
    pausing: PauseService
    snapshots: SnapshotService
    #: ``domain`` of create/connect responses (``get_host()``); ``None``: not configured.
    domain: str | None
    envd_version: str
    #: E2B SDK template builds; None: this server does not build templates.
    builds: TemplateBuildService | None = None
    #: ``PUT /sandboxes/{id}/network``; None: not offered.
    network: NetworkService | None = None
    #: E2B template tags (``name:tag``); None: not offered.
    tags: TemplateTagService | None = None
    #: ``<home>/cli.key`` (root-only): a caller that sends its content in ``X-Hutch-Host-Key``
    #: can read the host's home, so may name host paths (``envdPath`` of an image import).
    host_key_file: Path | None = None
    #: The node's capacity and pool fill (``GET /hutch/status``); None: not offered.
    node_status: NodeStatusSource | None = None
    #: Teams and their keys as admins manage them (``/admin/teams``); None: not offered.
    teams: TeamService | None = None
    #: Team usage series and live use (``/teams/{id}/metrics``); None: not offered.
    usage: UsageSampler | None = None
    #: The cluster token edges wake sandboxes with (``routes_edge.py``); None: not offered.
    cluster_token: str | None = None
    #: Template imports from OCI images, jobs in the store; None: not offered.
    imports: TemplateImportService | None = None


def context(request: Request) -> HttpContext:
    """The app's :class:`HttpContext`."""
    ctx = request.app.state.ctx
    assert isinstance(ctx, HttpContext)
    return ctx


async def authenticate(request: Request) -> Team:
    """The caller's team; :class:`~hutch.shared.errors.UnauthenticatedError` (401) if the
    key is missing or wrong."""
    team = await context(request).keys.authenticate(api_key=request.headers.get("x-api-key"))
    hlog.bind(team_id=team.id)
    return team


async def authenticate_caller(request: Request) -> Caller:
    """The caller's key and team (``X-API-Key``, else ``Authorization: Bearer``): what the
    admin routes check the role of; 401 as :func:`authenticate`."""
    keys = context(request).keys
    api_key = request.headers.get("x-api-key")
    if api_key is None:
        authorization = request.headers.get("authorization") or ""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            api_key = token.strip()
    return await keys.authenticate_caller(api_key=api_key)


async def authenticate_user(request: Request, *, api_key_allowed: bool = True) -> Team:
    """The team of a CLI/dashboard caller: ``Authorization: Bearer`` (or ``X-API-Key``
    where E2B also takes an API key); see ``service/keys.py``."""
    return await context(request).keys.authenticate_user(
        authorization=request.headers.get("authorization"),
        api_key=request.headers.get("x-api-key") if api_key_allowed else None,
    )
