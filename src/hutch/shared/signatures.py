"""Signed ``/files`` URLs: the v1 signature the E2B SDKs put on ``download_url``/``upload_url``.

``signature = "v1_" + base64_nopad(sha256("<path>:<read|write>:<username>:<token>[:<exp>]"))``
(e2b-compat.md §5; ``e2b/sandbox/signature.py``). The path and username are compared as
sent (URL-decoded, never expanded), in constant time.

Two callers with different needs: envd *enforces* a signature (match and expiry), the proxy
only *routes* by one (which sandbox's token made it; envd still checks expiry, so an expired
link reaches its sandbox and gets envd's precise message).

The refusals are E2B envd's own words (``packages/envd/internal/api/auth.go``
``validateSigning``; clients compare them), each a 401 except a ``signature_expiration``
that is not an integer, which E2B's generated parameter binding answers with a 400.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Final

#: ``/files`` methods and the operation a signature for them must name.
FILE_OPERATIONS: Final = {"GET": "read", "HEAD": "read", "POST": "write"}

Query = Mapping[str, Sequence[str]]

#: E2B envd's 401 messages for ``/files`` (``validateSigning``) and every other route.
MISSING_SIGNATURE: Final = "missing signature query parameter"
INVALID_SIGNATURE: Final = "invalid signature"
EXPIRED_SIGNATURE: Final = "signature is already expired"
TOKEN_MISMATCH: Final = "access token present in header but does not match"
UNAUTHORIZED: Final = (
    "unauthorized access, please provide a valid access token or method signing if supported"
)

_INT64_MAX = (1 << 63) - 1


def file_signature(
    *, path: str, operation: str, username: str, token: str, expiration: int | None
) -> str:
    """The v1 signature for ``operation`` (``read``/``write``) on ``path`` as ``username``."""
    raw = f"{path}:{operation}:{username}:{token}"
    if expiration is not None:
        raw += f":{expiration}"
    digest = hashlib.sha256(raw.encode()).digest()
    return "v1_" + base64.b64encode(digest).rstrip(b"=").decode("ascii")


def _first(query: Query, name: str) -> str:
    values = query.get(name)
    return values[0] if values else ""


def _parse_go_int(raw: str) -> int:
    """``raw`` as Go's ``strconv.ParseInt(raw, 10, 64)`` reads it; ValueError with Go's text.

    Python's ``int`` is laxer (spaces, underscores, other digits), so it is not used alone.
    """
    digits = raw[1:] if raw[:1] in ("+", "-") else raw
    if not digits or not (digits.isascii() and digits.isdigit()):
        raise ValueError(f'strconv.ParseInt: parsing "{raw}": invalid syntax')
    value = int(raw)
    if not -_INT64_MAX - 1 <= value <= _INT64_MAX:
        raise ValueError(f'strconv.ParseInt: parsing "{raw}": value out of range')
    return value


def _expiration(query: Query) -> int | None:
    """The ``signature_expiration`` value; raises ValueError when it is not an integer."""
    values = query.get("signature_expiration")
    if not values:
        return None
    return _parse_go_int(values[0])


def expiration_format_error(query: Query) -> str | None:
    """E2B's 400 message when ``signature_expiration`` is present but not an integer."""
    try:
        _expiration(query)
    except ValueError as exc:
        return (
            "Invalid format for parameter signature_expiration: "
            f"error binding string parameter: {exc}"
        )
    return None


def signature_matches(query: Query, *, operation: str, token: str) -> bool:
    """Whether ``query``'s signature was made with ``token`` (expiry not checked)."""
    signature = _first(query, "signature")
    if not signature:
        return False
    try:
        expiration = _expiration(query)
    except ValueError:
        return False
    expected = file_signature(
        path=_first(query, "path"),
        operation=operation,
        username=_first(query, "username"),
        token=token,
        expiration=expiration,
    )
    return hmac.compare_digest(signature.encode(), expected.encode())


def check_signature(query: Query, *, operation: str, token: str, now: float) -> str | None:
    """None when ``query`` carries a valid, unexpired signature; otherwise E2B's 401 message.

    In E2B's order: absent, then wrong, then expired (so an expired link made with another
    token is "invalid", and nothing tells a stranger whether a link had been valid). An
    expiration that is not an integer counts as a wrong signature here; envd answers it
    earlier with ``expiration_format_error``'s 400.
    """
    if "signature" not in query or not query["signature"]:
        return MISSING_SIGNATURE
    if not signature_matches(query, operation=operation, token=token):
        return INVALID_SIGNATURE
    expiration = _expiration(query)
    if expiration is not None and expiration < int(now):  # whole seconds, as Go's Unix()
        return EXPIRED_SIGNATURE
    return None
