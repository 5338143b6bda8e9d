"""``GET /health``, ``POST /init``, ``GET /envs``, ``GET /metrics``."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hutch.envd.context import Envd
from hutch.envd.metrics import MetricsReader
from hutch.envd.users import get_user
from hutch.shared.errors import InvalidArgumentError


def _string_map(value: object, field: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise InvalidArgumentError(f"{field} must be an object of string values")
    return dict(value)


def _optional_str(body: dict, field: str) -> str | None:
    value = body.get(field)
    if value is not None and not isinstance(value, str):
        raise InvalidArgumentError(f"{field} must be a string")
    return value


def routes(envd: Envd) -> list[Route]:
    """The system routes of ``envd``."""
    metrics = MetricsReader()

    async def health(request: Request) -> Response:
        return Response(status_code=204)

    async def init(request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError as exc:
            raise InvalidArgumentError(f"request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise InvalidArgumentError("request body must be a JSON object")
        env_vars = _string_map(body.get("envVars"), "envVars") if "envVars" in body else None
        token = _optional_str(body, "accessToken")
        user = _optional_str(body, "defaultUser")
        workdir = _optional_str(body, "defaultWorkdir")
        timestamp = body.get("timestamp")
        if user:
            get_user(user)  # an unknown user is refused before anything changes
        if workdir is not None and workdir and not workdir.startswith("/"):
            raise InvalidArgumentError("defaultWorkdir must be an absolute path")
        state = envd.state
        if env_vars is not None:
            state.env_vars = env_vars  # replaced, not merged (E2B's semantics)
        if token:
            state.access_token = token
        if user:
            state.default_user = user
        if workdir:
            state.default_workdir = workdir
        if isinstance(timestamp, str | int | float):
            state.last_init_timestamp = _parse_timestamp(timestamp)
        return Response(status_code=204)

    async def envs(request: Request) -> Response:
        return JSONResponse(envd.state.env_vars)

    async def get_metrics(request: Request) -> Response:
        return JSONResponse(metrics.read())

    return [
        Route("/health", health, methods=["GET"]),
        Route("/init", init, methods=["POST"]),
        Route("/envs", envs, methods=["GET"]),
        Route("/metrics", get_metrics, methods=["GET"]),
    ]


def _parse_timestamp(value: str | int | float) -> float | None:
    if isinstance(value, int | float):
        return float(value)
    from datetime import datetime

    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise InvalidArgumentError(f"timestamp {value!r} is not an RFC 3339 time") from None
