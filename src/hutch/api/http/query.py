"""Parsing of request bodies, path ids and listing query parameters."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import unquote_plus

from pydantic import BaseModel
from starlette.requests import Request

from hutch.api.models import SortOrder
from hutch.shared.errors import InvalidArgumentError, NotFoundError
from hutch.shared.ids import SandboxID, parse_sandbox_id

_M = TypeVar("_M", bound=BaseModel)


async def read_body(request: Request, model: type[_M], *, optional: bool = False) -> _M:
    """The JSON body as ``model``; 400 naming the field when it does not fit."""
    raw = await request.body()
    if not raw.strip():
        if optional:
            return model.model_validate({})
        raise InvalidArgumentError("a JSON request body is required")
    try:
        data: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(f"the request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidArgumentError("the request body must be a JSON object")
    return model.model_validate(data)  # ValidationError → 400 in http/errors.py


def sandbox_id_param(request: Request) -> SandboxID:
    """The ``{sandboxID}`` path segment: ``<id>`` or infra's ``<id>-<clientID>``."""
    raw = str(request.path_params["sandbox_id"])
    sandbox_id = parse_sandbox_id(raw)
    if sandbox_id is None:
        raise NotFoundError(f"sandbox {raw!r} not found", public_message=f"Sandbox {raw} not found")
    return sandbox_id


def parse_metadata_filter(value: str | None) -> dict[str, str]:
    """The ``metadata`` listing filter, double-encoded by the SDK (e2b-compat §2.1).

    The SDK sends ``urlencode({quote(k): quote(v)})`` as one query value. As infra's
    ``parseFilters``: the query layer decoded it once already; unescape once more, split
    on ``&`` and ``=``, and unescape each key and value.
    """
    if not value:
        return {}
    result: dict[str, str] = {}
    for pair in unquote_plus(value).split("&"):
        if not pair:
            continue
        key, sep, val = pair.partition("=")
        if not sep or not key:
            raise InvalidArgumentError(f"metadata: invalid filter {pair!r} (want key=value)")
        result[unquote_plus(key)] = unquote_plus(val)
    return result


def parse_limit(value: str | None, *, default: int = 100, maximum: int = 100) -> int:
    """``limit``: an integer in ``1..maximum``."""
    if value is None or value == "":
        return default
    try:
        limit = int(value)
    except ValueError as exc:
        raise InvalidArgumentError(f"limit must be an integer, not {value!r}") from exc
    if not 1 <= limit <= maximum:
        raise InvalidArgumentError(f"limit must be between 1 and {maximum}")
    return limit


def parse_states(values: list[str]) -> list[str] | None:
    """``state``: comma-joined and/or repeated; ``None`` when absent."""
    states = [s.strip() for v in values for s in v.split(",") if s.strip()]
    return states or None


def parse_time(value: str | None, *, field: str) -> datetime | None:
    """An RFC 3339 time (``Z`` or an offset; a naive one is taken as UTC)."""
    if not value:
        return None
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "+"))
    except ValueError as exc:
        raise InvalidArgumentError(f"{field} must be an RFC 3339 time, not {value!r}") from exc
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def parse_unix(value: str | None, *, field: str) -> datetime | None:
    """Unix seconds (the metrics endpoint's ``start``/``end``)."""
    if not value:
        return None
    try:
        seconds = int(value)
        if seconds < 0:
            raise ValueError(value)
        return datetime.fromtimestamp(seconds, UTC)
    except (ValueError, OverflowError, OSError) as exc:
        raise InvalidArgumentError(f"{field} must be unix seconds, not {value!r}") from exc


def parse_order(value: str | None) -> SortOrder:
    """``order``: ``asc`` or ``desc`` (default)."""
    if not value:
        return SortOrder.DESC
    try:
        return SortOrder(value.lower())
    except ValueError as exc:
        raise InvalidArgumentError(f"order must be 'asc' or 'desc', not {value!r}") from exc
