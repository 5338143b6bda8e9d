"""envd's composition root: wires state, managers and transports into one ASGI app.

Request flow: CORS -> access control (``auth.py``) -> by path prefix either a Connect
service (``/filesystem.Filesystem/*``, ``/process.Process/*``) or the plain-HTTP routes.

The Connect stack (connectrpc, protobuf-py, the generated descriptors, the process and
watch code) is about half of envd's import time, and ``/health``, which the node waits for,
needs none of it. So it is imported in a thread once the first request has been answered,
and a Connect request that comes before that import ends waits for it, without blocking
the event loop (ADR 16).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware

from hutch.envd.auth import AccessControl
from hutch.envd.context import Envd
from hutch.envd.filesystem.publications import Publications
from hutch.envd.filesystem.uploads import UploadManager
from hutch.envd.http import files as files_http
from hutch.envd.http import system as system_http
from hutch.envd.http import uploads as uploads_http
from hutch.envd.http.responses import EXCEPTION_HANDLERS
from hutch.envd.settings import EnvdSettings
from hutch.envd.state import EnvdState

log = logging.getLogger("hutch.envd")

#: Headers a browser client must be able to read (Connect's, and envd's own).
_EXPOSED_HEADERS = [
    "Connect-Protocol-Version",
    "Connect-Content-Encoding",
    "Connect-Accept-Encoding",
    "Grpc-Status",
    "Grpc-Message",
    "Content-Encoding",
    "Content-Disposition",
    "Content-Range",
    "Location",
]


class ConnectServices:
    """The Connect services, imported and built in a thread off the request path (ADR 16)."""

    #: The services by the first segment of their paths (``/process.Process/Start``).
    NAMES = frozenset({"filesystem.Filesystem", "process.Process"})

    def __init__(self, envd: Envd) -> None:
        self._envd = envd
        self._lock = threading.Lock()
        self._future: concurrent.futures.Future[dict[str, Callable]] | None = None
        self._apps: dict[str, Callable] | None = None

    def load(self) -> concurrent.futures.Future[dict[str, Callable]]:
        """Start the import (once) and return its future."""
        with self._lock:
            if self._future is None:
                self._future = concurrent.futures.Future()
                threading.Thread(
                    target=self._build, args=(self._future,), name="envd-connect", daemon=True
                ).start()
            return self._future

    def _build(self, future: concurrent.futures.Future[dict[str, Callable]]) -> None:
        try:
            from hutch.envd.rpc.services import build_services

            future.set_result(build_services(self._envd))
        except BaseException as exc:  # handed to every request that waits for it
            log.exception("envd could not load its Connect services")
            future.set_exception(exc)

    async def app(self, name: str) -> Callable:
        """The ASGI app of service ``name`` (one of :attr:`NAMES`), once it is loaded."""
        if self._apps is None:
            self._apps = await asyncio.wrap_future(self.load())
        return self._apps[name]


class _Router:
    """Dispatches to a Connect service by path prefix, else to the HTTP routes; owns lifespan."""

    def __init__(self, envd: Envd, http_app: Callable, services: ConnectServices):
        self._envd = envd
        self._http = http_app
        self._services = services

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if scope["type"] == "http":
            prefix = scope["path"].split("/", 2)[1] if scope["path"].count("/") >= 2 else ""
            if prefix in ConnectServices.NAMES:
                service = await self._services.app(prefix)
                return await service(scope, receive, send)
            try:
                return await self._http(scope, receive, send)
            finally:
                self._services.load()  # after the first answer, not before it
        return await self._http(scope, receive, send)

    async def _lifespan(self, receive: Callable, send: Callable) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self._envd.uploads.start()
                except Exception as exc:
                    log.exception("envd failed to start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                # Nobody asked yet: load the Connect services anyway, soon.
                asyncio.get_running_loop().call_later(_LOAD_CONNECT_AFTER_S, self._services.load)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._envd.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


#: When the Connect import starts if no request came first.
_LOAD_CONNECT_AFTER_S = 0.5


def create_envd(settings: EnvdSettings) -> Envd:
    """The envd object graph for ``settings``."""
    state = EnvdState(default_user=settings.default_user, default_workdir=settings.default_workdir)
    publications = Publications()
    return Envd(
        settings=settings,
        state=state,
        publications=publications,
        uploads=UploadManager(settings=settings, publications=publications),
    )


def create_app(settings: EnvdSettings, *, envd: Envd | None = None) -> Callable:
    """envd's ASGI application."""
    envd = envd or create_envd(settings)
    http_app = Starlette(
        routes=[
            *system_http.routes(envd),
            *files_http.routes(envd),
            *uploads_http.routes(envd),
        ],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
    )
    app: Callable = _Router(envd, http_app, ConnectServices(envd))
    app = AccessControl(app, envd.state)
    return CORSMiddleware(
        app,
        allow_origins=["*"],
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=_EXPOSED_HEADERS,
    )
