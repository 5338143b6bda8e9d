"""``create_node_app(service, token=...)``: the node API as one ASGI app (docs/node-api.md)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware

from hutch.node import metrics
from hutch.node.http import routes_artifacts, routes_sandboxes, routes_templates, routes_volumes
from hutch.node.http.auth import BearerAuth
from hutch.node.http.errors import EXCEPTION_HANDLERS
from hutch.node.service import NodeService
from hutch.shared.observe import Observe


def create_node_app(service: NodeService, *, token: str | None) -> Starlette:
    """The node API over ``service``; every request must carry ``token`` (see ``auth.py``)."""
    app = Starlette(
        routes=[
            *routes_sandboxes.ROUTES,
            *routes_templates.ROUTES,
            *routes_artifacts.ROUTES,
            *routes_volumes.ROUTES,
        ],
        middleware=[
            # Outermost: a refused token is still counted, logged and given a request id.
            Middleware(
                Observe,
                requests=metrics.REQUESTS,
                seconds=metrics.REQUEST_SECONDS,
                access_log="hutch.node.access",
                span_prefix="node",
                fields={"node_id": service.identity.node_id},
            ),
            Middleware(BearerAuth, token=token),
        ],
        exception_handlers=dict(EXCEPTION_HANDLERS),
    )
    app.router.redirect_slashes = False
    app.state.node = service
    return app
