"""Wiring the proxy into a uvicorn server: the HTTP app plus the WebSocket relay."""

from __future__ import annotations

import httpx
import uvicorn

from hutch.proxy.bodyrelay import RelayingHttpToolsProtocol
from hutch.proxy.catalog import SandboxCatalog
from hutch.proxy.server import create_app
from hutch.proxy.websocket import websocket_relay


def create_config(
    catalog: SandboxCatalog,
    *,
    host: str = "0.0.0.0",
    port: int = 49983,
    client: httpx.AsyncClient | None = None,
    log_level: str = "warning",
    require_token: str | None = None,
) -> uvicorn.Config:
    """A uvicorn config serving the proxy for ``catalog`` on ``host:port``.

    ``http``: uvicorn's httptools protocol plus the body relay (``bodyrelay.py``); the
    WebSocket relay hooks into its upgrade path. No ``proxy_headers``:
    the proxy is the edge and writes ``X-Forwarded-*`` itself. ``timeout_keep_alive`` above
    the SDK's pool expiry would hold idle sockets for nothing; uvicorn's default 5 s is kept.
    ``require_token``: a node's own proxy, which admits only edges with the cluster token.
    """
    return uvicorn.Config(
        create_app(catalog, client=client, require_token=require_token),
        host=host,
        port=port,
        http=RelayingHttpToolsProtocol,
        ws=websocket_relay(catalog, require_token=require_token),  # type: ignore[arg-type]
        lifespan="on",
        proxy_headers=False,
        server_header=False,
        date_header=False,
        log_level=log_level,
        access_log=False,
    )


def create_server(catalog: SandboxCatalog, **options: object) -> uvicorn.Server:
    """A uvicorn server for the proxy (see :func:`create_config` for ``options``)."""
    return uvicorn.Server(create_config(catalog, **options))  # type: ignore[arg-type]
