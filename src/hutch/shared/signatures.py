"""Signed ``/files`` URLs: the v1 signature the E2B SDKs put on ``download_url``/``upload_url``.

``signature = "v1_" + base64_nopad(sha256("<path>:<read|write>:<username>:<token>[:<exp>]"))``
(e2b-compat.md §5; ``e2b/sandbox/signature.py``). The path and username are compared as
sent (URL-decoded, never expanded), in constant time.

Two callers with different needs: envd *enforces* a signature (match and expiry), the proxy
only *routes* by one (which sandbox's token made it; envd still checks expiry, so an expired
link reaches its sandbox and gets envd's precise "signature expired").
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


def _expiration(query: Query) -> int | None:
    """The ``signature_expiration`` value; raises ValueError when it is not an integer."""
    raw = _first(query, "signature_expiration")
    return int(raw) if raw else None


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
    """None when ``query`` carries a valid, unexpired signature; otherwise why not."""
    if not _first(query, "signature"):
        return "missing access token or signature"
    try:
        expiration = _expiration(query)
    except ValueError:
        return "invalid signature_expiration"
    if not signature_matches(query, operation=operation, token=token):
        return "invalid signature"
    if expiration is not None and expiration < now:
        return "signature expired"
    return None
