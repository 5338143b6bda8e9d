"""``/admin/teams``: teams and their keys, for admin keys only (ADR 0015).

E2B's spec names ``POST /admin/teams/{teamID}/api-keys`` (201 ``CreatedTeamAPIKey``) and
``DELETE /admin/teams/{teamID}/api-keys/{apiKeyID}`` (204); hutch adds, in the same
namespace, ``GET|POST /admin/teams``, ``DELETE /admin/teams/{teamID}[?force=true]`` and
``GET /admin/teams/{teamID}/api-keys``. Also E2B's ``POST /admin/teams/{teamID}/sandboxes/
kill``, ``POST /admin/teams/{teamID}/builds/cancel`` and ``GET /admin/sandboxes/running-
counts`` (E2B's admin token is hutch's admin key), and ``GET /teams/{teamID}/metrics[/max]``
for members of the team and admins. ``{teamID}`` is a team's id or its name. A member
key gets 403 saying an admin key is needed; a missing or dead key 401. The role check and
the audit log are the service's (``service/teams.py``).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hutch.api.http.auth import authenticate_caller, context
from hutch.api.http.query import parse_unix, read_body
from hutch.api.http.schemas import (
    AdminNewKeyBody,
    NewTeamBody,
    PublishBody,
    admin_team_body,
    api_key_body,
    iso,
    listed_sandbox_body,
)
from hutch.api.models import Team
from hutch.api.service.keys import KeyService
from hutch.api.service.quotas import QuotaService, check_changes, wire_body
from hutch.api.service.teams import TeamService
from hutch.api.service.usage import UsageSampler
from hutch.shared.errors import InvalidArgumentError, NotFoundError, UnavailableError
from hutch.shared.ids import TeamID


def _teams(request: Request) -> TeamService:
    service = context(request).teams
    if service is None:
        raise UnavailableError("this server does not manage teams")
    return service


def _force(request: Request) -> bool:
    force = request.query_params.get("force", "false").lower()
    if force not in ("true", "false", "1", "0"):
        raise InvalidArgumentError(f"force {force!r}: must be true or false")
    return force in ("true", "1")


async def list_teams(request: Request) -> Response:
    """``GET /admin/teams`` → 200 every team, oldest first."""
    caller = await authenticate_caller(request)
    teams = _teams(request)
    listed = await teams.list_teams(caller)
    default = await teams.default_team()
    return JSONResponse(
        [
            admin_team_body(
                t, is_default=t.id == default.id, live_sandboxes=await teams.live_sandboxes(t.id)
            )
            for t in listed
        ]
    )


async def create_team(request: Request) -> Response:
    """``POST /admin/teams`` ``{name}`` → 201 the team; a taken name 409."""
    caller = await authenticate_caller(request)
    body = await read_body(request, NewTeamBody)
    team = await _teams(request).create_team(caller, name=body.name)
    return JSONResponse(admin_team_body(team, is_default=False, live_sandboxes=0), status_code=201)


async def delete_team(request: Request) -> Response:
    """``DELETE /admin/teams/{teamID}[?force=true]`` → 204; live sandboxes without force
    409."""
    caller = await authenticate_caller(request)
    await _teams(request).delete_team(
        caller, ref=str(request.path_params["team_id"]), force=_force(request)
    )
    return Response(status_code=204)


async def list_keys(request: Request) -> Response:
    """``GET /admin/teams/{teamID}/api-keys`` → 200 ``[TeamAPIKey]`` with role."""
    caller = await authenticate_caller(request)
    keys = await _teams(request).list_keys(caller, ref=str(request.path_params["team_id"]))
    return JSONResponse([api_key_body(k, admin=True) for k in keys])


async def create_key(request: Request) -> Response:
    """``POST /admin/teams/{teamID}/api-keys`` ``{name, admin?}`` → 201 ``CreatedTeamAPIKey``."""
    caller = await authenticate_caller(request)
    body = await read_body(request, AdminNewKeyBody)
    created = await _teams(request).create_key(
        caller, ref=str(request.path_params["team_id"]), name=body.name, admin=body.admin
    )
    return JSONResponse(
        api_key_body(created.api_key, secret=created.secret, admin=True), status_code=201
    )


async def delete_key(request: Request) -> Response:
    """``DELETE /admin/teams/{teamID}/api-keys/{apiKeyID}`` → 204."""
    caller = await authenticate_caller(request)
    await _teams(request).delete_key(
        caller,
        ref=str(request.path_params["team_id"]),
        key_id=str(request.path_params["key_id"]),
    )
    return Response(status_code=204)


def _quotas(request: Request) -> QuotaService:
    service = _teams(request).quotas
    if service is None:
        raise UnavailableError("this server does not manage quotas")
    return service


async def _quotas_body(
    request: Request, quotas: QuotaService, team_id: TeamID
) -> dict[str, object]:
    body: dict[str, object] = {
        "teamID": team_id,
        "quotas": wire_body(await quotas.effective(team_id)),
        "overrides": wire_body(await quotas.overrides(team_id)),
    }
    usage = context(request).usage
    if usage is not None:
        use = await usage.current(team_id)
        body["usage"] = {
            "runningSandboxes": use.running_sandboxes,
            "vcpus": use.vcpus,
            "memoryMB": use.memory_mb,
            "volumeBytes": use.volume_bytes,
            "pausedSandboxes": use.paused_sandboxes,
        }
    builds = context(request).builds
    if builds is not None and "usage" in body:
        body["usage"]["runningBuilds"] = await builds.running_builds(team_id)  # type: ignore[index]
    return body


async def _metrics_team(request: Request) -> tuple[Team, UsageSampler]:
    """The team whose metrics are asked for: the caller's own (another team's id 404, as
    an unknown one), or any team for an admin key; and the sampler."""
    caller = await authenticate_caller(request)
    ref = str(request.path_params["team_id"])
    if caller.admin:
        team = await _teams(request).resolve(ref)
    elif ref in (caller.team.id, caller.team.name):
        team = caller.team
    else:
        raise NotFoundError(f"team {ref!r} not found", public_message=f"Team '{ref}' not found")
    usage = context(request).usage
    if usage is None:
        raise UnavailableError("this server does not sample team usage")
    return team, usage


async def team_metrics(request: Request) -> Response:
    """``GET /teams/{teamID}/metrics?start=&end=`` → 200 ``[TeamMetric]`` (E2B's shape);
    ``start``/``end`` unix seconds (default: the last hour)."""
    team, usage = await _metrics_team(request)
    q = request.query_params
    start = parse_unix(q.get("start"), field="start")
    end = parse_unix(q.get("end"), field="end")
    return JSONResponse(
        [
            {
                "timestamp": iso(s.at),
                "timestampUnix": int(s.at.timestamp()),
                "concurrentSandboxes": s.concurrent,
                "sandboxStartRate": s.start_rate,
            }
            for s in await usage.series(team.id, start=start, end=end)
        ]
    )


async def team_metrics_max(request: Request) -> Response:
    """``GET /teams/{teamID}/metrics/max?metric=&start=&end=`` → 200 ``MaxTeamMetric``
    ``{timestamp, timestampUnix, value}``: the highest ``concurrent_sandboxes`` or
    ``sandbox_start_rate`` of the same samples, at its first sample (none: 0 at ``end``)."""
    team, usage = await _metrics_team(request)
    q = request.query_params
    metric = q.get("metric")
    if not metric:
        raise InvalidArgumentError("metric is required: concurrent_sandboxes or sandbox_start_rate")
    start = parse_unix(q.get("start"), field="start")
    end = parse_unix(q.get("end"), field="end")
    at, value = await usage.peak(team.id, metric, start=start, end=end)
    return JSONResponse({"timestamp": iso(at), "timestampUnix": int(at.timestamp()),
                         "value": value})  # fmt: skip


async def kill_team_sandboxes(request: Request) -> Response:
    """``POST /admin/teams/{teamID}/sandboxes/kill`` → 200 ``AdminSandboxKillResult``
    ``{killedCount, failedCount}``: every live sandbox of the team (running or paused)."""
    caller = await authenticate_caller(request)
    killed, failed = await _teams(request).kill_team_sandboxes(
        caller, ref=str(request.path_params["team_id"])
    )
    return JSONResponse({"killedCount": killed, "failedCount": failed})


async def cancel_team_builds(request: Request) -> Response:
    """``POST /admin/teams/{teamID}/builds/cancel`` → 200 ``AdminBuildCancelResult``
    ``{cancelledCount, failedCount}``: every pending and running template build."""
    caller = await authenticate_caller(request)
    cancelled, failed = await _teams(request).cancel_team_builds(
        caller, ref=str(request.path_params["team_id"])
    )
    return JSONResponse({"cancelledCount": cancelled, "failedCount": failed})


async def running_counts(request: Request) -> Response:
    """``GET /admin/sandboxes/running-counts`` → 200 ``{teamID: count}``
    (``AdminTeamRunningSandboxCounts``): teams without running sandboxes are omitted."""
    caller = await authenticate_caller(request)
    return JSONResponse(dict(await _teams(request).running_counts(caller)))


async def get_quotas(request: Request) -> Response:
    """``GET /admin/teams/{teamID}/quotas`` → 200 ``{teamID, quotas, overrides, usage}``:
    what is enforced (0: no limit), the team's own values (null: the default), and the
    team's live use as the quotas count it."""
    caller = await authenticate_caller(request)
    teams = _teams(request)
    KeyService.require_admin(caller, action="Reading a team's quotas")
    team = await teams.resolve(str(request.path_params["team_id"]))
    return JSONResponse(await _quotas_body(request, _quotas(request), team.id))


async def set_quotas(request: Request) -> Response:
    """``PATCH /admin/teams/{teamID}/quotas`` ``{maxRunningSandboxes?: int|null, ...}`` →
    200 as GET; an unknown name or a negative or absurd value 400."""
    caller = await authenticate_caller(request)
    teams = _teams(request)
    KeyService.require_admin(caller, action="Changing a team's quotas")
    team = await teams.resolve(str(request.path_params["team_id"]))
    try:
        body = await request.json()
    except ValueError:
        raise InvalidArgumentError("body: not JSON") from None
    if not isinstance(body, dict):
        raise InvalidArgumentError("body: must be an object of quotas")
    quotas = _quotas(request)
    await quotas.set(caller, team_id=team.id, changes=check_changes(body))
    return JSONResponse(await _quotas_body(request, quotas, team.id))


async def list_all_sandboxes(request: Request) -> Response:
    """``GET /admin/sandboxes[?teamID=]`` → 200 ``[ListedSandbox + teamID, teamName]``:
    every team's running and paused sandboxes (or one team's, by id or name)."""
    caller = await authenticate_caller(request)
    found = await _teams(request).all_sandboxes(caller, ref=request.query_params.get("teamID"))
    return JSONResponse(
        [{**listed_sandbox_body(s), "teamID": team.id, "teamName": team.name} for team, s in found]
    )


async def publish_template(request: Request) -> Response:
    """``PATCH /admin/templates/{templateID}`` ``{public}`` → 200 ``{templateID, teamID,
    public}``: publish (or unpublish) any team's template."""
    caller = await authenticate_caller(request)
    body = await read_body(request, PublishBody)
    template = await context(request).templates.publish_any(
        caller, str(request.path_params["template_id"]), public=body.public
    )
    return JSONResponse(
        {"templateID": template.id, "teamID": template.team_id, "public": template.public}
    )


ROUTES = [
    Route("/admin/sandboxes", list_all_sandboxes, methods=["GET"]),
    Route("/admin/sandboxes/running-counts", running_counts, methods=["GET"]),
    Route("/admin/teams/{team_id}/sandboxes/kill", kill_team_sandboxes, methods=["POST"]),
    Route("/admin/teams/{team_id}/builds/cancel", cancel_team_builds, methods=["POST"]),
    Route("/admin/templates/{template_id}", publish_template, methods=["PATCH"]),
    Route("/teams/{team_id}/metrics", team_metrics, methods=["GET"]),
    Route("/teams/{team_id}/metrics/max", team_metrics_max, methods=["GET"]),
    Route("/admin/teams/{team_id}/quotas", get_quotas, methods=["GET"]),
    Route("/admin/teams/{team_id}/quotas", set_quotas, methods=["PATCH"]),
    Route("/admin/teams", list_teams, methods=["GET"]),
    Route("/admin/teams", create_team, methods=["POST"]),
    Route("/admin/teams/{team_id}", delete_team, methods=["DELETE"]),
    Route("/admin/teams/{team_id}/api-keys", list_keys, methods=["GET"]),
    Route("/admin/teams/{team_id}/api-keys", create_key, methods=["POST"]),
    Route("/admin/teams/{team_id}/api-keys/{key_id}", delete_key, methods=["DELETE"]),
]
