"""``hutch envd``: parse settings, build the app, serve it with uvicorn.

uvicorn's package ``__init__`` imports its command line (``uvicorn.main``: click, the
reload and multiprocess supervisors, ``multiprocessing``), none of which envd uses: it
builds a ``uvicorn.Config`` and runs a ``uvicorn.Server``. :func:`_uvicorn` imports those two
without running that ``__init__`` (ADR 32).
"""

from __future__ import annotations

import importlib.util
import socket
import sys
from types import ModuleType

from hutch.envd.app import create_app
from hutch.envd.logs import configure_logging
from hutch.envd.settings import load_settings

#: The option that hands envd a listening socket (``--listen-fd N``); the node's zygote
#: looks for this name to know the envd it forks takes one.
LISTEN_FD_OPTION = "--listen-fd"

#: uvicorn's HTTP/1.1 protocol: httptools (llhttp, in C) parses a request body without the
#: two Python-level copies of every byte that h11's receive buffer makes, which were the
#: largest cost of a streamed upload (issue 19, ADR 36 addendum). Same wire behaviour.
HTTP_PROTOCOL = "httptools"


def _uvicorn() -> tuple[type, type]:
    """``(uvicorn.Config, uvicorn.Server)``, without importing uvicorn's command line.

    The package is registered as a bare module (its ``__path__`` only, ``__init__`` not
    run), so ``uvicorn.config`` and ``uvicorn.server`` import as submodules do; the two
    names that uvicorn's own modules take from the package (``from uvicorn import
    Config`` in ``uvicorn.lifespan``) are set on it. If uvicorn is imported already (a
    test, ``hutch envd`` from the CLI), that module is used as it is.
    """
    if "uvicorn" not in sys.modules:
        spec = importlib.util.find_spec("uvicorn")
        if spec is None or spec.submodule_search_locations is None:
            raise ModuleNotFoundError("uvicorn is not installed", name="uvicorn")
        package: ModuleType = importlib.util.module_from_spec(spec)
        sys.modules["uvicorn"] = package
    package = sys.modules["uvicorn"]
    from uvicorn.config import Config
    from uvicorn.server import Server

    if not hasattr(package, "Config"):
        package.Config = Config  # type: ignore[attr-defined]
        package.Server = Server  # type: ignore[attr-defined]
    return Config, Server


def main(argv: list[str] | None = None) -> int:
    """Run envd until it is told to stop."""
    settings = load_settings(sys.argv[1:] if argv is None else argv)
    configure_logging(settings.log_level)
    config_type, server_type = _uvicorn()
    config = config_type(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        lifespan="on",
        log_level=settings.log_level,
        log_config=None,  # uvicorn's records go through envd's JSON lines (envd/logs.py)
        access_log=False,
        server_header=False,
        ws="none",
        http=HTTP_PROTOCOL,
        loop="asyncio",
        # SDK streams (commands, watches) idle for long stretches between keepalives.
        timeout_keep_alive=300,
    )
    server = server_type(config)
    if settings.listen_fd >= 0:
        server.run(sockets=[socket.socket(fileno=settings.listen_fd)])
    else:
        server.run()
    return 0
