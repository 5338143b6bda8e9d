"""``/nodes``: E2B's admin view of the cluster's nodes (ADR 0025).

``GET /nodes`` → ``[Node]``, ``GET /nodes/{nodeID}`` → ``NodeDetail``, ``POST
/nodes/{nodeID}`` ``{status: draining|ready}`` → 204 (``hutch node drain|undrain``). E2B
guards them with its admin token; hutch with an admin API key (ADR 0015). Any other
caller gets E2B's answer to a request without the admin token: 401.
"""

from __future__ import annotations

from typing import Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hutch.api.http.auth import authenticate_caller
from hutch.api.http.query import read_body
from hutch.api.http.routes_cluster import ClusterContext
from hutch.api.http.schemas import NodeStatusChangeBody, node_body
from hutch.api.nodes_model import NodeStatus
from hutch.api.service.membership import MembershipService
from hutch.shared.errors import InvalidArgumentError, UnauthenticatedError, UnavailableError
from hutch.shared.ids import NodeID


async def _admin(request: Request, action: str) -> MembershipService:
    caller = await authenticate_caller(request)
    if not caller.admin:
        raise UnauthenticatedError(
            f"key {caller.key.id} is not an admin ({action})",
            public_message=f"{action} needs an admin API key; key {caller.key.mask} is a "
            "member key (make one with 'hutch keys create --admin')",
        )
    cluster = getattr(request.app.state, "cluster", None)
    if not isinstance(cluster, ClusterContext) or cluster.membership is None:
        raise UnavailableError("this server keeps no node membership")
    return cluster.membership


async def list_nodes(request: Request) -> Response:
    """``GET /nodes`` → 200 every node (``Node``), by id."""
    service = await _admin(request, "Listing nodes")
    return JSONResponse([node_body(v) for v in await service.list_nodes()])


async def get_node(request: Request) -> Response:
    """``GET /nodes/{nodeID}`` → 200 ``NodeDetail``; 404 for a node never registered."""
    service = await _admin(request, "Reading a node")
    view = await service.get_node(NodeID(str(request.path_params["node_id"])))
    body = node_body(view)
    body.pop("sandboxStartingCount")
    return JSONResponse(body)


async def change_status(request: Request) -> Response:
    """``POST /nodes/{nodeID}`` ``{status}`` → 204; ``draining`` or ``ready`` only."""
    service = await _admin(request, "Changing a node's status")
    body = await read_body(request, NodeStatusChangeBody)
    if body.status not in (NodeStatus.READY.value, NodeStatus.DRAINING.value):
        raise InvalidArgumentError(
            f"status {body.status!r}: hutch sets only 'draining' or 'ready' "
            "(a node becomes lost when its lease ends)"
        )
    await service.set_status(NodeID(str(request.path_params["node_id"])), NodeStatus(body.status))
    return Response(status_code=204)


ROUTES: Final = [
    Route("/nodes", list_nodes, methods=["GET"]),
    Route("/nodes/{node_id}", get_node, methods=["GET"]),
    Route("/nodes/{node_id}", change_status, methods=["POST"]),
]
