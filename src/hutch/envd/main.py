"""``hutch envd``: parse settings, build the app, serve it with uvicorn."""

from __future__ import annotations

import sys

import uvicorn

from hutch.envd.app import create_app
from hutch.envd.logs import configure_logging
from hutch.envd.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    """Run envd until it is told to stop."""
    settings = load_settings(sys.argv[1:] if argv is None else argv)
    configure_logging(settings.log_level)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        lifespan="on",
        log_level=settings.log_level,
        log_config=None,  # uvicorn's records go through envd's JSON lines (envd/logs.py)
        access_log=False,
        server_header=False,
        ws="none",
        http="h11",
        loop="asyncio",
        # SDK streams (commands, watches) idle for long stretches between keepalives.
        timeout_keep_alive=300,
    )
    server = uvicorn.Server(config)
    server.run()
    return 0
