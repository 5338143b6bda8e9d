"""envd's two Connect services as ASGI apps, keyed by service name.

Importing this module is the Connect stack's whole import cost (connectrpc, protobuf-py and
the generated descriptors, the process and watch code behind the services), so
``app.create_app`` imports it in a thread once envd has answered its first request (ADR 16).
"""

from __future__ import annotations

from collections.abc import Callable

from hutch.envd.context import Envd
from hutch.envd.rpc.codecs import codecs as strict_codecs
from hutch.envd.rpc.disconnect import DisconnectWatch
from hutch.envd.rpc.errors import ErrorInterceptor
from hutch.envd.rpc.filesystem import FilesystemService
from hutch.envd.rpc.process import ProcessService
from hutch.shared.proto.filesystem.filesystem_connect import FilesystemASGIApplication
from hutch.shared.proto.process.process_connect import ProcessASGIApplication


def build_services(envd: Envd) -> dict[str, Callable]:
    """``{"filesystem.Filesystem": app, "process.Process": app}`` for ``envd``."""
    interceptors = [ErrorInterceptor()]
    read_max = envd.settings.max_rpc_message_bytes
    return {
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
