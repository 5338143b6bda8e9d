"""``/hutch/cluster/nodes``: nodes register and renew their lease (ADR 0025).

The registration wire is ``shared/clusterwire.py``; both routes need the cluster token as
``Authorization: Bearer`` (compared in constant time) and answer a ``Lease``. The api app
mounts these routes, and ``hutch serve`` serves them to its own node in-process
(:func:`create_cluster_app`), so one path registers every node.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Final

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hutch.api.http.errors import EXCEPTION_HANDLERS
from hutch.api.http.query import read_body
from hutch.api.nodes_model import Node, NodeCapacity, NodeRegistration, NodeUsage
from hutch.api.service.leases import LostNodeSweeper
from hutch.api.service.membership import MembershipService, ReconcileOutcome
from hutch.shared import clusterwire as wire
from hutch.shared.errors import UnauthenticatedError, UnavailableError
from hutch.shared.ids import NodeID


@dataclass(frozen=True, slots=True)
class ClusterContext:
    """What the routes need: the service and the token (None: membership is off)."""

    membership: MembershipService | None
    token: str | None
    #: The lost-node sweeper the api runs beside its reaper (None: not here).
    sweeper: LostNodeSweeper | None = None


def _membership(request: Request) -> MembershipService:
    cluster = getattr(request.app.state, "cluster", None)
    if not isinstance(cluster, ClusterContext) or cluster.membership is None or not cluster.token:
        raise UnavailableError(
            "cluster membership is off on this api: set HUTCH_CLUSTER_TOKEN",
            public_message="This api takes no node registrations (no cluster token is set)",
        )
    header = request.headers.get("authorization") or ""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), cluster.token.encode()
    ):
        raise UnauthenticatedError(
            "missing or wrong cluster token",
            public_message="A node must send the cluster token as 'Authorization: Bearer'",
        )
    return cluster.membership


def _usage(usage: wire.Usage) -> NodeUsage:
    return NodeUsage(
        cpu_pct=usage.cpu_pct, memory_used_mb=usage.memory_used_mb,
        disk_used_mb=usage.disk_used_mb,
    )  # fmt: skip


def _lease(node: Node, service: MembershipService, outcome: ReconcileOutcome | None) -> Response:
    body = wire.Lease(
        node_id=node.id,
        status=node.status.value,
        lease_s=service.policy.lease_s,
        heartbeat_interval_s=service.policy.heartbeat_interval_s,
        lease_expires_at=node.lease_expires_at.timestamp(),
        adopted=list(outcome.adopted) if outcome else [],
        removed=list(outcome.removed) if outcome else [],
        marked_killed=list(outcome.marked_killed) if outcome else [],
    )
    return JSONResponse(body.model_dump())


async def register(request: Request) -> Response:
    """``POST /hutch/cluster/nodes`` ``RegisterNode`` → 200 ``Lease``; 409
    ``node_version_incompatible`` for a node of another wire or hutch minor version."""
    service = _membership(request)
    body = await read_body(request, wire.RegisterNode)
    registered, outcome = await service.register(
        NodeRegistration(
            node_id=NodeID(body.node_id),
            address=body.address,
            api_version=body.api_version,
            version=body.version,
            boot_id=body.boot_id,
            incarnation=body.incarnation,
            capacity=NodeCapacity(
                cpu_count=body.capacity.cpu_count,
                memory_mb=body.capacity.memory_mb,
                disk_mb=body.capacity.disk_mb,
                max_sandboxes=body.capacity.max_sandboxes,
            ),
            labels=body.labels,
            usage=_usage(body.usage),
            templates=tuple(body.templates),
        )
    )
    return _lease(registered.node, service, outcome)


async def heartbeat(request: Request) -> Response:
    """``POST /hutch/cluster/nodes/{node_id}/heartbeat`` ``Heartbeat`` → 200 ``Lease``;
    404 (unknown or lost) or 409 (another boot): register again."""
    service = _membership(request)
    body = await read_body(request, wire.Heartbeat)
    node = await service.heartbeat(
        NodeID(str(request.path_params["node_id"])), boot_id=body.boot_id,
        usage=_usage(body.usage), templates=body.templates,
    )  # fmt: skip
    return _lease(node, service, None)


ROUTES: Final = [
    Route(f"{wire.CLUSTER_PREFIX}/nodes", register, methods=["POST"]),
    Route(f"{wire.CLUSTER_PREFIX}/nodes/{{node_id}}/heartbeat", heartbeat, methods=["POST"]),
]


def create_cluster_app(cluster: ClusterContext) -> Starlette:
    """These routes alone (``hutch serve`` registers its node through them in-process)."""
    app = Starlette(routes=list(ROUTES), exception_handlers=dict(EXCEPTION_HANDLERS))
    app.state.cluster = cluster
    return app
