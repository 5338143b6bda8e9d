"""Opaque cursor tokens for keyset pagination over ``(started_at, id)``.

A token names the last row of the page it ends: the next page is every row strictly after
it in the listing's order. Unlike offsets, that is stable when rows are inserted or
deleted between page requests: no row is seen twice, and no row that existed throughout
is skipped. The token is base64url JSON, versioned, and says nothing the client cannot
already see (a start time and a sandbox id).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from hutch.shared.errors import InvalidArgumentError
from hutch.shared.ids import SandboxID

_VERSION = 1


@dataclass(frozen=True, slots=True)
class Cursor:
    """The position after which the next page starts."""

    started_at: datetime
    sandbox_id: SandboxID


def encode_cursor(cursor: Cursor) -> str:
    """The opaque token for ``cursor``."""
    ts = cursor.started_at.astimezone(UTC)
    payload = [_VERSION, ts.isoformat(timespec="microseconds"), cursor.sandbox_id]
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str) -> Cursor:
    """The cursor in ``token``; :class:`InvalidArgumentError` for anything malformed."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        version, ts, sandbox_id = json.loads(raw)
        started_at = datetime.fromisoformat(ts)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(f"invalid nextToken {token!r}") from exc
    if version != _VERSION or not isinstance(sandbox_id, str) or started_at.tzinfo is None:
        raise InvalidArgumentError(f"invalid nextToken {token!r}")
    return Cursor(started_at=started_at.astimezone(UTC), sandbox_id=SandboxID(sandbox_id))
