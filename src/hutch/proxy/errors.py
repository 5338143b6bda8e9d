"""The proxy's own answers: errors raised while routing, and their E2B JSON bodies.

The 502 messages are matched by the SDK (``e2b/exceptions.py``): ``"was not found"`` raises
``SandboxNotRunningException`` and ``"port is not open"`` ``SandboxUnreachableException``, so
their wording is part of the wire contract (e2b-compat.md §1.2, §6.20). Bodies never say
which other sandboxes exist.
"""

from __future__ import annotations

import json
from typing import Final

from hutch.shared.errors import ConflictError, InvalidArgumentError

SANDBOX_NOT_FOUND: Final = "The sandbox was not found"
PORT_NOT_OPEN: Final = "The sandbox is running but port is not open"
INVALID_SIGNATURE: Final = "missing or invalid signature"
#: infra's ``NewInternalRouteError`` message (``packages/shared/pkg/proxy/template``).
INTERNAL_ROUTE: Final = (
    "This endpoint is reserved for the E2B control plane and is not reachable through the "
    "sandbox URL"
)


STILL_TRANSITIONING: Final = "The sandbox is still transitioning. Try again in a moment."


class RoutingError(InvalidArgumentError):
    """The request names no sandbox, or names one badly (answered with 400)."""


class SandboxTransitioningError(ConflictError):
    """A wake waited its budget for the pause or resume in progress (answered with 409)."""

    def __init__(self, sandbox_id: str) -> None:
        super().__init__(f"sandbox {sandbox_id} is still transitioning")
        self.sandbox_id = sandbox_id


def json_body(status: int, message: str, **fields: object) -> bytes:
    """An E2B error body: ``{"code": status, "message": ..., **fields}``."""
    return json.dumps({**fields, "message": message, "code": status}).encode()


TRAFFIC_TOKEN_HEADER = "e2b-traffic-access-token"


def traffic_token_missing(sandbox_id: str) -> tuple[int, bytes]:
    """403: the sandbox's ports want its traffic token (``allowPublicTraffic: false``)."""
    return 403, json_body(
        403, f"the {TRAFFIC_TOKEN_HEADER} header is missing", sandboxId=sandbox_id
    )


def traffic_token_invalid(sandbox_id: str) -> tuple[int, bytes]:
    """403: the traffic token sent is not the sandbox's."""
    return 403, json_body(
        403, f"the {TRAFFIC_TOKEN_HEADER} header is invalid", sandboxId=sandbox_id
    )


def bad_request(message: str) -> tuple[int, bytes]:
    """400 for a request the proxy cannot route."""
    return 400, json_body(400, message)


def sandbox_not_found(sandbox_id: str) -> tuple[int, bytes]:
    """502 for an unknown, killed or not-running sandbox."""
    return 502, json_body(502, SANDBOX_NOT_FOUND, sandboxId=sandbox_id)


def port_not_open(sandbox_id: str, port: int) -> tuple[int, bytes]:
    """502 when nothing accepts connections on the sandbox's port."""
    return 502, json_body(502, PORT_NOT_OPEN, sandboxId=sandbox_id, port=port)


def internal_route(path: str) -> tuple[int, bytes]:
    """404 for envd's control routes (``/init``, ...), which only the node calls: the same
    answer whether or not the sandbox exists, and without its id (as infra)."""
    return 404, json_body(404, INTERNAL_ROUTE, path=path)


def still_transitioning(sandbox_id: str) -> tuple[int, bytes]:
    """409 (infra's ``NewSandboxStillTransitioningError``): retry in a moment."""
    return 409, json_body(409, STILL_TRANSITIONING, sandboxId=sandbox_id)


def invalid_signature() -> tuple[int, bytes]:
    """401 for a signed URL no sandbox's token verifies: the same for every sandbox."""
    return 401, json_body(401, INVALID_SIGNATURE)


def routes_unavailable(detail: str) -> tuple[int, bytes]:
    """503 when the routes cannot be looked up (an edge whose store is down): retryable."""
    return 503, json_body(503, f"Sandbox routes are unavailable, retry shortly: {detail}")


NODE_TOKEN_REFUSED: Final = "missing or invalid cluster token"


def node_token_refused() -> tuple[int, bytes]:
    """401 from a node's proxy to a caller without the cluster token (ADR 0019)."""
    return 401, json_body(401, NODE_TOKEN_REFUSED)


def upstream_failed(sandbox_id: str, port: int) -> tuple[int, bytes]:
    """502 when the sandbox's server broke the exchange before it answered."""
    return 502, json_body(502, "The sandbox did not answer", sandboxId=sandbox_id, port=port)
