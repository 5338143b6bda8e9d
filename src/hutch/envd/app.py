"""envd's composition root: wires state, managers and transports into one ASGI app.

Request flow: CORS -> access control (``auth.py``) -> by path prefix either a Connect
service (``/filesystem.Filesystem/*``, ``/process.Process/*``) or the plain-HTTP routes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware

from hutch.envd.auth import AccessControl
from hutch.envd.context import Envd
from hutch.envd.filesystem.uploads import UploadManager
from hutch.envd.filesystem.watcher import WatcherManager
from hutch.envd.http import files as files_http
from hutch.envd.http import system as system_http
from hutch.envd.http import uploads as uploads_http
from hutch.envd.http.responses import EXCEPTION_HANDLERS
from hutch.envd.process.manager import ProcessManager
from hutch.envd.rpc.codecs import codecs as strict_codecs
from hutch.envd.rpc.disconnect import DisconnectWatch
from hutch.envd.rpc.errors import ErrorInterceptor
from hutch.envd.rpc.filesystem import FilesystemService
from hutch.envd.rpc.process import ProcessService
from hutch.envd.settings import EnvdSettings
from hutch.envd.state import EnvdState
from hutch.shared.proto.filesystem.filesystem_connect import FilesystemASGIApplication
from hutch.shared.proto.process.process_connect import ProcessASGIApplication

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


class _Router:
    """Dispatches to a Connect service by path prefix, else to the HTTP routes; owns lifespan."""

    def __init__(self, envd: Envd, http_app: Callable, services: dict[str, Callable]):
        self._envd = envd
        self._http = http_app
        self._services = services

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if scope["type"] == "http":
            prefix = scope["path"].split("/", 2)[1] if scope["path"].count("/") >= 2 else ""
            service = self._services.get(prefix)
            if service is not None:
                return await service(scope, receive, send)
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
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._envd.watchers.close()
                await self._envd.uploads.close()
                await self._envd.processes.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_envd(settings: EnvdSettings) -> Envd:
    """The envd object graph for ``settings``."""
    state = EnvdState(default_user=settings.default_user, default_workdir=settings.default_workdir)
    watchers = WatcherManager()
    return Envd(
        settings=settings,
        state=state,
        processes=ProcessManager(state=state),
        watchers=watchers,
        uploads=UploadManager(settings=settings, publications=watchers.publications),
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
    interceptors = [ErrorInterceptor()]
    read_max = settings.max_rpc_message_bytes
    services: dict[str, Callable] = {
        "filesystem.Filesystem": DisconnectWatch(
            FilesystemASGIApplication(
                service=FilesystemService(envd),
                interceptors=interceptors,
                read_max_bytes=read_max,
                codecs=strict_codecs(),
            )
        ),
        "process.Process": DisconnectWatch(
            ProcessASGIApplication(
                service=ProcessService(envd),
                interceptors=interceptors,
                read_max_bytes=read_max,
                codecs=strict_codecs(),
            )
        ),
    }
    app: Callable = _Router(envd, http_app, services)
    app = AccessControl(app, envd.state)
    return CORSMiddleware(
        app,
        allow_origins=["*"],
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=_EXPOSED_HEADERS,
    )
