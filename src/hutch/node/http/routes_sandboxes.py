"""``/v1/node``, ``/v1/sandboxes/...``, ``/v1/snapshots/...``, ``/v1/reconcile``: thin
handlers over :class:`~hutch.node.service.NodeService` (wire models from ``shared.nodewire``)."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hutch.node.sandbox.models import RunningSandbox, SandboxRequest
from hutch.node.service import NodeService, VolumeMount
from hutch.shared import logging as hlog
from hutch.shared import nodewire as wire
from hutch.shared.egress import EgressPolicy, parse_policy
from hutch.shared.errors import InvalidArgumentError

_M = TypeVar("_M", bound=BaseModel)


def service(request: Request) -> NodeService:
    """The service the app was built over."""
    svc: NodeService = request.app.state.node
    return svc


async def body(request: Request, model: type[_M]) -> _M:
    """The request's JSON body as ``model`` (a bad one is 400)."""
    raw = await request.body()
    return model.model_validate_json(raw or b"{}")


def answer(model: BaseModel, *, status: int = 200) -> JSONResponse:
    """``model`` as the JSON answer."""
    return JSONResponse(model.model_dump(mode="json"), status_code=status)


def sandbox_out(sandbox: RunningSandbox, *, paused: str | None = None) -> wire.Sandbox:
    """A running sandbox on the wire."""
    return wire.Sandbox(
        sandbox_id=sandbox.sandbox_id,
        template=sandbox.template,
        address=str(sandbox.address),
        started_at=sandbox.started_at,
        metadata=dict(sandbox.metadata),
        paused=paused if paused is not None else sandbox.paused,
    )


def _mounts(mounts: list[wire.VolumeMount]) -> list[VolumeMount]:
    return [VolumeMount(volume_id=m.volume_id, backend=m.backend, path=m.path) for m in mounts]


def _egress(body: wire.Egress) -> EgressPolicy:
    return parse_policy(body.allow_out, body.deny_out, dns_servers=body.dns_servers)


def _sid(request: Request) -> str:
    return str(request.path_params["sandbox_id"])


async def node_info(request: Request) -> Response:
    """``GET /v1/node``."""
    svc = service(request)
    ident = svc.identity
    return answer(
        wire.NodeInfo(
            node_id=ident.node_id,
            version=ident.version,
            runtime=ident.runtime,
            max_sandboxes=ident.max_sandboxes,
            sandboxes=svc.sandbox_count(),
        )
    )


async def node_status(request: Request) -> Response:
    """``GET /v1/status``."""
    svc = service(request)
    load = svc.load()
    return answer(
        wire.NodeStatus(
            node_id=svc.identity.node_id,
            runtime=svc.identity.runtime,
            max_sandboxes=svc.identity.max_sandboxes,
            running=load.running,
            paused=load.paused,
            host_cpu_count=load.host_cpu_count,
            host_memory_mb=load.host_memory_mb,
            allocated_cpu=load.allocated_cpu,
            allocated_memory_mb=load.allocated_memory_mb,
            pool=[wire.PoolFill(template=t, target=n, ready=r) for t, n, r in load.pool],
        )
    )


async def list_sandboxes(request: Request) -> Response:
    """``GET /v1/sandboxes``."""
    return answer(wire.SandboxList(sandboxes=[sandbox_out(s) for s in service(request).list()]))


async def create_sandbox(request: Request) -> Response:
    """``POST /v1/sandboxes`` → 201 ``Sandbox`` once envd answered and was initialised."""
    spec = await body(request, wire.CreateSandbox)
    hlog.bind(sandbox_id=spec.sandbox_id, template=spec.template)
    running = await service(request).create(
        SandboxRequest(
            sandbox_id=spec.sandbox_id,
            template=spec.template,
            env_vars=spec.env_vars,
            access_token=spec.access_token,
            cpu_count=spec.cpu_count,
            memory_mb=spec.memory_mb,
            disk_mb=spec.disk_mb,
            allow_internet=spec.allow_internet,
            egress=_egress(spec.egress) if spec.egress is not None else None,
            metadata=spec.metadata,
        ),
        volumes=_mounts(spec.volume_mounts),
        artifact_sources=spec.artifact_sources,
    )
    return answer(sandbox_out(running), status=201)


async def kill_sandbox(request: Request) -> Response:
    """``DELETE /v1/sandboxes/{id}`` → 204 (idempotent)."""
    await service(request).kill(_sid(request))
    return Response(status_code=204)


async def pause_sandbox(request: Request) -> Response:
    """``POST /v1/sandboxes/{id}/pause`` → ``Paused``."""
    args = await body(request, wire.PauseSandbox)
    kept = await service(request).pause(_sid(request), keep_memory=args.keep_memory)
    return answer(wire.Paused(memory_kept=kept))


async def resume_sandbox(request: Request) -> Response:
    """``POST /v1/sandboxes/{id}/resume`` → ``Resumed``."""
    args = await body(request, wire.ResumeSandbox)
    sandbox, kept = await service(request).resume(
        _sid(request), keep_memory=args.keep_memory, env_vars=args.env_vars,
        access_token=args.access_token, volumes=_mounts(args.volume_mounts),
    )  # fmt: skip
    return answer(wire.Resumed(sandbox=sandbox_out(sandbox), memory_kept=kept))


async def snapshot_sandbox(request: Request) -> Response:
    """``POST /v1/sandboxes/{id}/snapshot`` → 204 once template ``snapshot_id`` is published."""
    args = await body(request, wire.SnapshotSandbox)
    await service(request).snapshot(_sid(request), snapshot_id=args.snapshot_id)
    return Response(status_code=204)


async def delete_snapshot(request: Request) -> Response:
    """``DELETE /v1/snapshots/{id}`` → 204 (idempotent)."""
    await service(request).delete_snapshot(str(request.path_params["snapshot_id"]))
    return Response(status_code=204)


async def set_metadata(request: Request) -> Response:
    """``PUT /v1/sandboxes/{id}/metadata`` → 204."""
    args = await body(request, wire.Metadata)
    service(request).set_metadata(_sid(request), args.metadata)
    return Response(status_code=204)


async def set_network(request: Request) -> Response:
    """``PUT /v1/sandboxes/{id}/network`` → 204: the whole egress policy, in force at once."""
    args = await body(request, wire.Egress)
    await service(request).set_network(_sid(request), _egress(args))
    return Response(status_code=204)


def _epoch(request: Request, name: str) -> float | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return float(raw)
    except ValueError:
        raise InvalidArgumentError(f"{name}: want epoch seconds, not {raw!r}") from None


async def metrics(request: Request) -> Response:
    """``GET /v1/sandboxes/{id}/metrics?start=&end=`` → ``MetricsList``."""
    samples = service(request).metrics(
        _sid(request), start=_epoch(request, "start"), end=_epoch(request, "end")
    )
    return answer(
        wire.MetricsList(
            samples=[
                wire.MetricsSample(
                    timestamp=s.timestamp,
                    cpu_count=s.cpu_count,
                    cpu_used_pct=s.cpu_used_pct,
                    mem_used=s.mem_used,
                    mem_total=s.mem_total,
                    mem_cache=s.mem_cache,
                    disk_used=s.disk_used,
                    disk_total=s.disk_total,
                )
                for s in samples
            ]
        )
    )


async def logs(request: Request) -> Response:
    """``GET /v1/sandboxes/{id}/logs`` → ``LogList``."""
    entries = service(request).logs(_sid(request))
    return answer(
        wire.LogList(
            lines=[
                wire.LogLine(
                    timestamp=e.timestamp, message=e.message, level=e.level, fields=e.fields
                )
                for e in entries
            ]
        )
    )


async def reconcile(request: Request) -> Response:
    """``POST /v1/reconcile`` → ``Reconciled``: the host made to agree with the ids sent."""
    args = await body(request, wire.Reconcile)
    report, adopted = await service(request).reconcile(args.known, paused=args.paused)
    return answer(
        wire.Reconciled(
            removed=list(report.removed),
            missing=list(report.missing),
            adopted=[sandbox_out(s, paused=report.paused.get(s.sandbox_id)) for s in adopted],
        )
    )


ROUTES = [
    Route(f"{wire.PREFIX}/node", node_info, methods=["GET"]),
    Route(f"{wire.PREFIX}/status", node_status, methods=["GET"]),
    Route(f"{wire.PREFIX}/sandboxes", list_sandboxes, methods=["GET"]),
    Route(f"{wire.PREFIX}/sandboxes", create_sandbox, methods=["POST"]),
    Route(f"{wire.PREFIX}/sandboxes/{{sandbox_id}}", kill_sandbox, methods=["DELETE"]),
    Route(f"{wire.PREFIX}/sandboxes/{{sandbox_id}}/pause", pause_sandbox, methods=["POST"]),
    Route(f"{wire.PREFIX}/sandboxes/{{sandbox_id}}/resume", resume_sandbox, methods=["POST"]),
    Route(f"{wire.PREFIX}/sandboxes/{{sandbox_id}}/snapshot", snapshot_sandbox, methods=["POST"]),
    Route(f"{wire.PREFIX}/sandboxes/{{sandbox_id}}/metadata", set_metadata, methods=["PUT"]),
    Route(f"{wire.PREFIX}/sandboxes/{{sandbox_id}}/network", set_network, methods=["PUT"]),
    Route(f"{wire.PREFIX}/sandboxes/{{sandbox_id}}/metrics", metrics, methods=["GET"]),
    Route(f"{wire.PREFIX}/sandboxes/{{sandbox_id}}/logs", logs, methods=["GET"]),
    Route(f"{wire.PREFIX}/snapshots/{{snapshot_id}}", delete_snapshot, methods=["DELETE"]),
    Route(f"{wire.PREFIX}/reconcile", reconcile, methods=["POST"]),
]
