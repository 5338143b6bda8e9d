"""``/sandboxes`` and ``/v2/sandboxes``: E2B's sandbox endpoints (e2b-compat §2.1).

Success statuses are exactly those the SDK's generated client lists (create 201, kill /
timeout / refresh / pause 204, connect 200 running or 201 resumed); any other makes the
SDK fail with "Body of the request is None".
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hutch.api.http.auth import authenticate, context
from hutch.api.http.query import (
    parse_limit,
    parse_metadata_filter,
    parse_order,
    parse_states,
    parse_time,
    parse_unix,
    read_body,
    sandbox_id_param,
)
from hutch.api.http.schemas import (
    ConnectBody,
    NetworkBody,
    NewSandboxBody,
    PauseBody,
    RefreshBody,
    ResumeBody,
    TimeoutBody,
    listed_sandbox_body,
    logs_v1_body,
    logs_v2_body,
    metric_body,
    sandbox_body,
    sandbox_detail_body,
)
from hutch.api.service.logs import LogDirection, LogsQuery
from hutch.api.service.pausing import Resumed
from hutch.api.service.ports import SandboxLogLine
from hutch.api.service.sandboxes import CreateSandboxRequest, ListSandboxesQuery
from hutch.shared.errors import InvalidArgumentError

#: v1 ``GET /sandboxes`` has no pagination: it returns everything, up to this many.
_V1_LIST_CAP: Final = 10_000


async def _create(request: Request, *, api_version: int) -> Response:
    team = await authenticate(request)
    body = await read_body(request, NewSandboxBody)
    unsupported = body.unsupported()
    if unsupported:
        raise InvalidArgumentError("; ".join(unsupported))
    ctx = context(request)
    sandbox = await ctx.sandboxes.create_sandbox(
        team_id=team.id,
        request=CreateSandboxRequest(
            template=body.template_id,
            timeout_s=body.timeout,
            metadata=body.metadata or {},
            env_vars=body.env_vars or {},
            # v2 is always secured (NewSandboxV2 has no ``secure``); v1 only when asked.
            secure=True if api_version >= 2 else bool(body.secure),
            allow_internet=True
            if body.allow_internet_access is None
            else body.allow_internet_access,
            auto_pause=bool(body.auto_pause),
            auto_pause_memory=body.auto_pause_memory,
            auto_resume=body.auto_resume.enabled if body.auto_resume is not None else None,
            volume_mounts=tuple((m.name, m.path) for m in body.volume_mounts or ()),
            mcp_servers=tuple(sorted(body.mcp or ())),
            disk_mb=body.disk_size_mb,
            api_version=api_version,
            **_network_fields(body.network),
        ),
        idempotency_key=request.headers.get("idempotency-key"),
    )
    return JSONResponse(sandbox_body(sandbox, domain=ctx.domain), status_code=201)


def _network_fields(network: NetworkBody | None) -> dict[str, object]:
    if network is None:
        return {}
    return {
        "network_sent": True,
        "allow_out": tuple(network.allow_out) if network.allow_out is not None else None,
        "deny_out": tuple(network.deny_out) if network.deny_out is not None else None,
        "dns_servers": tuple(network.dns_servers) if network.dns_servers is not None else None,
        "allow_public_traffic": network.allow_public_traffic,
        "mask_request_host": network.mask_request_host,
    }


async def set_network(request: Request) -> Response:
    """``PUT /sandboxes/{id}/network`` → 204: the whole egress policy replaced."""
    team = await authenticate(request)
    body = await read_body(request, NetworkBody)
    unsupported = body.unsupported()
    for field in ("allowPublicTraffic", "maskRequestHost"):
        if body.model_dump(by_alias=True).get(field) is not None:
            unsupported.append(f"network.{field}: set at create only")
    if unsupported:
        raise InvalidArgumentError("; ".join(unsupported))
    service = context(request).network
    if service is None:
        raise InvalidArgumentError("network updates are not offered by this server")
    await service.set_network(
        team_id=team.id, sandbox_id=sandbox_id_param(request), allow_out=body.allow_out,
        deny_out=body.deny_out, dns_servers=body.dns_servers,
        allow_internet=body.allow_internet_access,
    )  # fmt: skip
    return Response(status_code=204)


async def create_v2(request: Request) -> Response:
    """``POST /v2/sandboxes`` → 201 ``Sandbox``."""
    return await _create(request, api_version=2)


async def create_v1(request: Request) -> Response:
    """``POST /sandboxes`` (legacy) → 201 ``Sandbox``."""
    return await _create(request, api_version=1)


def _list_query(request: Request, *, limit: int, next_token: str | None) -> ListSandboxesQuery:
    q = request.query_params
    return ListSandboxesQuery(
        states=parse_states(q.getlist("state")),
        metadata=parse_metadata_filter(q.get("metadata")),
        started_after=parse_time(q.get("startedAfter"), field="startedAfter"),
        template=q.get("template") or None,
        order=parse_order(q.get("order")),
        limit=limit,
        next_token=next_token,
    )


async def list_v2(request: Request) -> Response:
    """``GET /v2/sandboxes`` → 200 ``[ListedSandbox]`` and ``X-Next-Token``."""
    team = await authenticate(request)
    q = request.query_params
    query = _list_query(
        request, limit=parse_limit(q.get("limit")), next_token=q.get("nextToken") or None
    )
    service = context(request).sandboxes
    page = await service.list_sandboxes(team_id=team.id, query=query)
    headers = {"X-Next-Token": page.next_token} if page.next_token else {}
    mounts = await context(request).volumes.mounted_in_many([s.id for s in page.items])
    # infra: present exactly when running sandboxes were asked for; all that match the
    # filters, before pagination.
    total = await service.count_running(team_id=team.id, query=query)
    if total is not None:
        headers["X-Total-Running"] = str(total)
    body = [listed_sandbox_body(s, mounts=mounts[s.id]) for s in page.items]
    return JSONResponse(body, headers=headers)


async def list_v1(request: Request) -> Response:
    """``GET /sandboxes`` (legacy, unpaginated) → 200 ``[ListedSandbox]``."""
    team = await authenticate(request)
    service = context(request).sandboxes
    service_volumes = context(request).volumes
    items: list[dict[str, object]] = []
    token: str | None = None
    while len(items) < _V1_LIST_CAP:
        page = await service.list_sandboxes(
            team_id=team.id, query=_list_query(request, limit=100, next_token=token)
        )
        mounts = await service_volumes.mounted_in_many([s.id for s in page.items])
        items.extend(listed_sandbox_body(s, mounts=mounts[s.id]) for s in page.items)
        token = page.next_token
        if token is None:
            break
    return JSONResponse(items)


async def get_sandbox(request: Request) -> Response:
    """``GET /sandboxes/{id}`` → 200 ``SandboxDetail``."""
    team = await authenticate(request)
    ctx = context(request)
    sandbox = await ctx.sandboxes.get_sandbox(team_id=team.id, sandbox_id=sandbox_id_param(request))
    mounts = await ctx.volumes.mounted_in(sandbox.id)
    return JSONResponse(sandbox_detail_body(sandbox, domain=ctx.domain, mounts=mounts))


async def kill_sandbox(request: Request) -> Response:
    """``DELETE /sandboxes/{id}`` → 204; 404 once it is gone (``kill()`` → False)."""
    team = await authenticate(request)
    await context(request).sandboxes.kill_sandbox(
        team_id=team.id, sandbox_id=sandbox_id_param(request)
    )
    return Response(status_code=204)


async def set_timeout(request: Request) -> Response:
    """``POST /sandboxes/{id}/timeout`` ``{timeout}`` → 204."""
    team = await authenticate(request)
    body = await read_body(request, TimeoutBody)
    await context(request).sandboxes.set_timeout(
        team_id=team.id, sandbox_id=sandbox_id_param(request), timeout_s=body.timeout
    )
    return Response(status_code=204)


async def refresh(request: Request) -> Response:
    """``POST /sandboxes/{id}/refreshes`` ``{duration?}`` → 204."""
    team = await authenticate(request)
    body = await read_body(request, RefreshBody, optional=True)
    await context(request).sandboxes.refresh(
        team_id=team.id, sandbox_id=sandbox_id_param(request), duration_s=body.duration
    )
    return Response(status_code=204)


def _resumed_response(outcome: Resumed, *, domain: str | None) -> Response:
    # 200: it was running; 201: resumed. ``Hutch-Resume`` says how (ADR 0004): ``memory``
    # (processes kept) or ``filesystem`` (booted again from its files: new boot id).
    headers = {}
    if outcome.resumed:
        headers["Hutch-Resume"] = "memory" if outcome.memory_kept else "filesystem"
    return JSONResponse(
        sandbox_body(outcome.sandbox, domain=domain),
        status_code=201 if outcome.resumed else 200,
        headers=headers,
    )


async def _connect(request: Request, *, api_version: int) -> Response:
    team = await authenticate(request)
    body = await read_body(request, ConnectBody, optional=api_version >= 2)
    ctx = context(request)
    outcome = await ctx.pausing.connect(
        team_id=team.id,
        sandbox_id=sandbox_id_param(request),
        timeout_s=body.timeout,
        keep_memory=body.memory is not False,
        api_version=api_version,
    )
    return _resumed_response(outcome, domain=ctx.domain)


async def pause(request: Request) -> Response:
    """``POST /sandboxes/{id}/pause`` ``{memory?}`` → 204; 409 when already paused."""
    team = await authenticate(request)
    body = await read_body(request, PauseBody, optional=True)
    await context(request).pausing.pause(
        team_id=team.id,
        sandbox_id=sandbox_id_param(request),
        keep_memory=body.memory is not False,
    )
    return Response(status_code=204)


async def resume(request: Request) -> Response:
    """``POST /sandboxes/{id}/resume`` (deprecated) ``{timeout?, autoPause?}`` → 201."""
    team = await authenticate(request)
    body = await read_body(request, ResumeBody, optional=True)
    if body.auto_pause is not None:
        raise InvalidArgumentError("autoPause: changing it at resume is not supported")
    ctx = context(request)
    outcome = await ctx.pausing.resume(
        team_id=team.id, sandbox_id=sandbox_id_param(request), timeout_s=body.timeout
    )
    return _resumed_response(outcome, domain=ctx.domain)


async def connect_v2(request: Request) -> Response:
    """``POST /v2/sandboxes/{id}/connect`` → 200 ``Sandbox``."""
    return await _connect(request, api_version=2)


async def connect_v1(request: Request) -> Response:
    """``POST /sandboxes/{id}/connect`` ``{timeout}`` → 200 ``Sandbox``."""
    return await _connect(request, api_version=1)


async def metrics(request: Request) -> Response:
    """``GET /sandboxes/{id}/metrics?start=&end=`` (unix seconds) → 200 ``[SandboxMetric]``."""
    team = await authenticate(request)
    q = request.query_params
    samples = await context(request).sandboxes.get_metrics(
        team_id=team.id,
        sandbox_id=sandbox_id_param(request),
        start=parse_unix(q.get("start"), field="start"),
        end=parse_unix(q.get("end"), field="end"),
    )
    return JSONResponse([metric_body(m) for m in samples])


async def metrics_many(request: Request) -> Response:
    """``GET /sandboxes/metrics?sandbox_ids=a,b`` → 200 ``SandboxesWithMetrics`` (the newest
    sample of each running sandbox of the team; others are left out)."""
    team = await authenticate(request)
    raw = ",".join(request.query_params.getlist("sandbox_ids"))
    ids = list(dict.fromkeys(x.strip() for x in raw.split(",") if x.strip()))
    if not ids:
        raise InvalidArgumentError("sandbox_ids is required")
    latest = await context(request).sandboxes.get_latest_metrics(team_id=team.id, sandbox_ids=ids)
    return JSONResponse({"sandboxes": {sid: metric_body(m) for sid, m in latest.items()}})


async def _log_lines(request: Request, *, v2: bool) -> list[SandboxLogLine]:
    team = await authenticate(request)
    q = request.query_params
    direction = q.get("direction") or "forward"
    if v2 and direction not in {d.value for d in LogDirection}:
        raise InvalidArgumentError(f"direction must be forward or backward, not {direction!r}")
    cursor_field = "cursor" if v2 else "start"
    query = LogsQuery(
        cursor=parse_unix_ms(q.get(cursor_field), field=cursor_field),
        limit=_log_limit(q.get("limit"), maximum=1000 if v2 else 10_000),
        direction=LogDirection(direction) if v2 else LogDirection.FORWARD,
        min_level=(q.get("level") or None) if v2 else None,
        search=(q.get("search") or None) if v2 else None,
    )
    return await context(request).sandboxes.get_logs(
        team_id=team.id, sandbox_id=sandbox_id_param(request), query=query
    )


def _log_limit(value: str | None, *, maximum: int) -> int:
    # The spec allows 0 here (unlike the list endpoints' 1..100).
    if not value:
        return 1000
    try:
        limit = int(value)
    except ValueError as exc:
        raise InvalidArgumentError(f"limit must be an integer, not {value!r}") from exc
    if not 0 <= limit <= maximum:
        raise InvalidArgumentError(f"limit must be between 0 and {maximum}")
    return limit


async def logs_v1(request: Request) -> Response:
    """``GET /sandboxes/{id}/logs?start=&limit=`` → 200 ``SandboxLogs``."""
    return JSONResponse(logs_v1_body(await _log_lines(request, v2=False)))


async def logs_v2(request: Request) -> Response:
    """``GET /v2/sandboxes/{id}/logs?cursor=&limit=&direction=&level=&search=`` → 200
    ``SandboxLogsV2Response``."""
    return JSONResponse(logs_v2_body(await _log_lines(request, v2=True)))


def parse_unix_ms(value: str | None, *, field: str) -> datetime | None:
    """Log cursors are unix milliseconds (infra's ``start``/``cursor``)."""
    if not value:
        return None
    try:
        ms = int(value)
        if ms < 0:
            raise ValueError(value)
        return datetime.fromtimestamp(ms / 1000, UTC)
    except (ValueError, OverflowError, OSError) as exc:
        raise InvalidArgumentError(f"{field} must be unix milliseconds, not {value!r}") from exc


ROUTES: Final = [
    Route("/v2/sandboxes", create_v2, methods=["POST"]),
    Route("/v2/sandboxes", list_v2, methods=["GET"]),
    Route("/sandboxes", create_v1, methods=["POST"]),
    Route("/sandboxes", list_v1, methods=["GET"]),
    # Before ``/sandboxes/{sandbox_id}``, which would take "metrics" for an id.
    Route("/sandboxes/metrics", metrics_many, methods=["GET"]),
    Route("/sandboxes/{sandbox_id}", get_sandbox, methods=["GET"]),
    Route("/sandboxes/{sandbox_id}", kill_sandbox, methods=["DELETE"]),
    Route("/sandboxes/{sandbox_id}/timeout", set_timeout, methods=["POST"]),
    Route("/sandboxes/{sandbox_id}/refreshes", refresh, methods=["POST"]),
    Route("/sandboxes/{sandbox_id}/connect", connect_v1, methods=["POST"]),
    Route("/v2/sandboxes/{sandbox_id}/connect", connect_v2, methods=["POST"]),
    Route("/sandboxes/{sandbox_id}/pause", pause, methods=["POST"]),
    Route("/sandboxes/{sandbox_id}/resume", resume, methods=["POST"]),
    Route("/sandboxes/{sandbox_id}/network", set_network, methods=["PUT"]),
    Route("/sandboxes/{sandbox_id}/metrics", metrics, methods=["GET"]),
    Route("/sandboxes/{sandbox_id}/logs", logs_v1, methods=["GET"]),
    Route("/v2/sandboxes/{sandbox_id}/logs", logs_v2, methods=["GET"]),
]
