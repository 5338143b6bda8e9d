"""``python -m hutch.interpreter --port 49999``: the server the template starts."""

from __future__ import annotations

import logging
import sys

import uvicorn

from hutch.interpreter.app import build_app
from hutch.interpreter.settings import parse_args


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    logging.basicConfig(
        level=settings.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    config = uvicorn.Config(
        build_app(settings),
        host=settings.host,
        port=settings.port,
        access_log=False,
        log_level=settings.log_level,
        timeout_keep_alive=640,  # the SDKs keep their connection between cells
        lifespan="on",
    )
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
