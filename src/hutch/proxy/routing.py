"""Where a request goes: pure parsing of the routing headers and the ``Host``.

Rules (e2b-compat.md §1.2, infra's ``packages/shared/pkg/proxy/host.go``), first match wins:

1. ``E2b-Sandbox-Id`` *and* ``E2b-Sandbox-Port``: on any ``Host``. Infra honours them only on
   ``localhost``, IPs and ``sandbox.<domain>``; a self-hosted gateway must accept them
   everywhere, because ``E2B_SANDBOX_URL`` is one URL for every sandbox. One header without
   the other is an error (infra's ``MissingHeaderError``), never a silent fallback.
2. ``Host: <port>-<sandboxId>[-<clientId>].<domain>`` (what ``sbx.get_host(port)`` builds).
3. Neither: a signed ``GET``/``POST /files`` URL (``download_url``/``upload_url``) carries no
   sandbox header, so the caller must find the sandbox whose token made the signature.

Ids must match ``^[a-z0-9]+$``; infra's legacy ``<id>-<clientID>`` form (``-6532622b``) is
accepted and stripped. Nothing here does IO.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from hutch.proxy.errors import RoutingError
from hutch.shared.ids import SandboxID, parse_sandbox_id

#: envd's fixed port inside every sandbox (``ConnectionConfig.envd_port``).
ENVD_PORT: Final = 49983

#: envd's control routes: the node calls them at the sandbox's address, never through the
#: proxy, so a request for one that arrives here has no legitimate sender (``/init`` is
#: exempt from envd's token check before the first init). infra's list
#: (``orchestrator/pkg/sandbox/envd/internal_routes*.go``), whichever hutch's envd serves.
INTERNAL_ENVD_PATHS: Final = frozenset(
    {"/init", "/upgrade", "/collapse", "/freeze", "/fsfreeze", "/fsthaw", "/unfreeze"}
)

_ID_HEADER: Final = b"e2b-sandbox-id"
_PORT_HEADER: Final = b"e2b-sandbox-port"


@dataclass(frozen=True, slots=True)
class SandboxTarget:
    """A request addressed to ``port`` of sandbox ``sandbox_id``."""

    sandbox_id: SandboxID
    port: int


@dataclass(frozen=True, slots=True)
class SignedFileTarget:
    """A signed ``/files`` request with no sandbox named: route by the signature (rule 3)."""

    port: int = ENVD_PORT


Target = SandboxTarget | SignedFileTarget


def parse_port(value: str) -> int | None:
    """A TCP port from its decimal text, or None (no signs, spaces or leading ``+``)."""
    if not value.isascii() or not value.isdigit() or len(value) > 5:
        return None
    port = int(value)
    return port if 0 < port < 65536 else None


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return None


def _from_headers(sandbox: str | None, port: str | None) -> SandboxTarget | None:
    if sandbox is None and port is None:
        return None
    if sandbox is None or port is None:
        missing = "E2b-Sandbox-Id" if sandbox is None else "E2b-Sandbox-Port"
        raise RoutingError(
            f"missing header {missing}: send both E2b-Sandbox-Id and E2b-Sandbox-Port"
        )
    sandbox_id = parse_sandbox_id(sandbox)
    if sandbox_id is None:
        raise RoutingError("invalid E2b-Sandbox-Id: sandbox ids match ^[a-z0-9]+$")
    number = parse_port(port)
    if number is None:
        raise RoutingError("invalid E2b-Sandbox-Port: expected a port number 1-65535")
    return SandboxTarget(sandbox_id, number)


def parse_host(host: str) -> SandboxTarget | None:
    """The target named by a ``<port>-<sandboxId>[-<clientId>].<domain>[:<port>]`` Host, or None.

    A Host of another shape (an IP, ``localhost``, a bare domain) names no sandbox; that is
    not an error, since header or signature routing may still apply.
    """
    label, dot, _domain = host.partition(".")
    if not dot:
        return None  # a single label ("localhost:49983") is never <port>-<id>.<domain>
    port_text, dash, rest = label.partition("-")
    if not dash:
        return None
    port = parse_port(port_text)
    sandbox_id = parse_sandbox_id(rest.lower())
    if port is None or sandbox_id is None:
        return None
    return SandboxTarget(sandbox_id, port)


def _is_signed_files(method: str, path: str, query_string: bytes) -> bool:
    if path != "/files" or method not in ("GET", "HEAD", "POST"):
        return False
    return any(part.startswith(b"signature=") for part in query_string.split(b"&"))


def route(
    *, method: str, path: str, query_string: bytes, headers: Iterable[tuple[bytes, bytes]]
) -> Target:
    """Decide where a request goes (module docstring), or raise :class:`RoutingError`."""
    headers = list(headers)
    by_headers = _from_headers(_header(headers, _ID_HEADER), _header(headers, _PORT_HEADER))
    if by_headers is not None:
        return by_headers
    by_host = parse_host(_header(headers, b"host") or "")
    if by_host is not None:
        return by_host
    if _is_signed_files(method, path, query_string):
        return SignedFileTarget()
    raise RoutingError(
        "no sandbox named: send E2b-Sandbox-Id and E2b-Sandbox-Port, "
        "or use a Host of the form <port>-<sandboxId>.<domain>"
    )


def is_internal(target: SandboxTarget, path: str) -> bool:
    """Whether ``path`` (decoded) addresses one of envd's control routes on envd's port.

    Cleaned first (``//init``, ``/init/``, ``/files/../init`` all count), so the answer
    covers everything envd itself could route to a control path; any method, so a 405
    from envd cannot confirm the route exists.
    """
    if target.port != ENVD_PORT or not path:
        return False
    cleaned = posixpath.normpath("/" + path.lstrip("/"))
    return cleaned in INTERNAL_ENVD_PATHS
