"""What an RPC's headers say: who it runs as, how often to send keepalives, its deadline."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from hutch.envd.context import Envd
from hutch.envd.users import User
from hutch.shared.errors import UnauthenticatedError

#: envd's keepalive interval when the client asks for none (E2B's envd default).
DEFAULT_KEEPALIVE_S = 90.0


def request_user(envd: Envd, ctx: Any) -> User:
    """The user named by ``Authorization: Basic base64("<user>:")``, else the default user."""
    header = ctx.request_headers.get("authorization", "")
    name = ""
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            raise UnauthenticatedError("Authorization must use the Basic scheme")
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise UnauthenticatedError("Authorization header is not valid base64") from None
        name = decoded.partition(":")[0]
    return envd.user(name)


def keepalive_interval(ctx: Any) -> float:
    """Seconds between keepalive messages, as the client asked in ``Keepalive-Ping-Interval``."""
    raw = ctx.request_headers.get("keepalive-ping-interval", "")
    try:
        value = float(raw)
    except ValueError:
        return DEFAULT_KEEPALIVE_S
    return value if value > 0 else DEFAULT_KEEPALIVE_S


def deadline_s(ctx: Any) -> float | None:
    """Seconds left until the call's ``Connect-Timeout-Ms`` deadline, or None without one."""
    remaining = ctx.timeout_ms
    if remaining is None:
        return None
    return max(0.0, remaining / 1000.0)
