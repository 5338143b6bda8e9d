"""envd's log: one flat JSON object per line on stderr, the shape E2B's envd writes.

E2B's envd logs with zerolog: ``{"level":"info","logger":"process","timestamp":
"2026-11-23T17:31:18.250123Z","message":"..."}`` plus the event's own fields, one object per
line; its API serves each line raw (``SandboxLog.line``) and parsed (``SandboxLogEntry``:
``level``, ``message``, the other keys as ``fields``), and the ``e2b`` CLI's ``sandbox
logs`` runs ``JSON.parse`` on every line. hutch's envd writes the same shape, so the node
reads its log as E2B's API reads envd's (``node/sandbox/envd_log.py``; ADR 0010).

``logger`` names the part that logged, as E2B's loggers do (``envd``, ``process``, ...):
the last part of the Python logger's name under ``hutch.envd`` (``envd`` for
``hutch.envd`` itself) and ``uvicorn`` for uvicorn's records. A record logged with an
exception carries its traceback in ``error`` (zerolog's ``Err`` field).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Final

#: Python's level names as zerolog's (E2B's API knows debug, info, warn and error).
LEVELS: Final = {
    "TRACE": "debug", "DEBUG": "debug", "INFO": "info", "WARNING": "warn", "ERROR": "error",
    "CRITICAL": "error",
}  # fmt: skip


def logger_name(name: str) -> str:
    """The ``logger`` field for a Python logger's ``name``."""
    if name == "hutch.envd":
        return "envd"
    if name.startswith("hutch.envd."):
        return name.rsplit(".", 1)[1]
    if name == "uvicorn" or name.startswith("uvicorn."):
        return "uvicorn"
    return name


class JsonLineFormatter(logging.Formatter):
    """A record as one line of JSON (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, tz=UTC)
        line: dict[str, str] = {
            "level": LEVELS.get(record.levelname, "info"),
            "logger": logger_name(record.name),
            "timestamp": stamp.isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        # One object per line whatever the message holds: json.dumps escapes newlines.
        return json.dumps(line, ensure_ascii=False)


def configure_logging(level: str) -> None:
    """Send every record (envd's and uvicorn's) to stderr as JSON lines, from ``level`` up.

    The one place envd configures logging; uvicorn must be started with
    ``log_config=None`` so that its loggers propagate here instead of printing text.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLineFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
