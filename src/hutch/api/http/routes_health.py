"""``GET /health``: 200 once the API is serving (the store is open). No key needed."""

from __future__ import annotations

from typing import Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


async def health(request: Request) -> Response:
    """200 ``{"status": "ok"}``."""
    return JSONResponse({"status": "ok"})


ROUTES: Final = [Route("/health", health, methods=["GET", "HEAD"])]
