"""``GET /hutch/status``: hutch's own operator endpoint (not E2B's), what ``hutch status``
shows: the node's capacity, its running and paused sandboxes, the warm pool's fill.

Authenticated with any team's key like every route but ``/health``; the counts are the
node's (every team's), which is what an operator sizing the host needs. Templates are in
``GET /templates``. 503 when this api was started without a status source.
"""

from __future__ import annotations

from typing import Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hutch.api.http.auth import authenticate, context
from hutch.api.http.schemas import node_status_body
from hutch.shared.errors import UnavailableError


async def status(request: Request) -> Response:
    """200 ``{nodeID, runtime, capacity, sandboxes, pool}``."""
    await authenticate(request)
    source = context(request).node_status
    if source is None:
        raise UnavailableError("this api has no node status source")
    return JSONResponse(node_status_body(await source.status()))


ROUTES: Final = [Route("/hutch/status", status, methods=["GET"])]
