"""``PATCH /sandboxes/{id}/metadata``: hutch's extension (E2B infra's "PATCH sandbox metadata").

Body: a JSON object; a string value sets its key, ``null`` or ``""`` removes it, keys not
in the body are untouched. 200 with the full resulting map. 400 names the offending key,
404 for an unknown (or another team's) sandbox, 409 with the state when it is not running.
"""

from __future__ import annotations

import json
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hutch.api.http.auth import authenticate, context
from hutch.api.http.query import sandbox_id_param
from hutch.shared.errors import InvalidArgumentError


async def patch_metadata(request: Request) -> Response:
    """``PATCH /sandboxes/{id}/metadata`` → 200 ``{key: value}``."""
    team = await authenticate(request)
    sandbox_id = sandbox_id_param(request)
    raw = await request.body()
    try:
        body: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(f"the request body is not valid JSON: {exc}") from exc
    result = await context(request).metadata.patch_metadata(
        team_id=team.id, sandbox_id=sandbox_id, patch=body
    )
    return JSONResponse(result)


ROUTES: Final = [
    Route("/sandboxes/{sandbox_id}/metadata", patch_metadata, methods=["PATCH"]),
]
