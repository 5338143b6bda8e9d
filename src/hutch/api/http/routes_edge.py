"""``POST /hutch/edge/sandboxes/{id}/wake``: an edge ``hutch proxy`` resumes a paused
auto-resume sandbox that traffic came for (ADR 0019).

The caller is an edge, not a user: it proves it with the cluster token as ``Bearer``
(``HUTCH_CLUSTER_TOKEN``). An api without one configured answers 404 (the route is not
offered); a wrong or missing token is 401. The answer is 204 once the sandbox runs again;
a sandbox that is not paused with auto-resume answers as ``PauseService.auto_resume`` does.
"""

from __future__ import annotations

import hmac
from typing import Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hutch.api.http.auth import context
from hutch.shared.errors import NotFoundError, UnauthenticatedError


async def wake(request: Request) -> Response:
    """Resume the sandbox through the api's own auto-resume, then 204."""
    ctx = context(request)
    if ctx.cluster_token is None:
        raise NotFoundError("no such route: this api serves no edge proxy")
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), ctx.cluster_token.encode()
    ):
        raise UnauthenticatedError("missing or invalid cluster token")
    await ctx.pausing.auto_resume(request.path_params["sandbox_id"])
    return Response(status_code=204)


ROUTES: Final = [Route("/hutch/edge/sandboxes/{sandbox_id}/wake", wake, methods=["POST"])]
