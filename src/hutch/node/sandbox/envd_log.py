"""Parsing a sandbox's envd log (``<sandbox_dir>/envd.log``) into timestamped entries.

The file is what tini and envd write to their stdout/stderr (the runtime hands them the
file; ADR 0010). Three kinds of lines appear in it:

* envd's own records, ``2026-11-23 17:31:18,123 envd INFO started pid 12 as user: ...``
  (``envd/main.py``'s format; ``asctime`` is the sandbox's local time, UTC in hutch's
  templates, which have no other zone configured);
* uvicorn's, ``INFO:     Uvicorn running on http://0.0.0.0:49983``: no time of their own;
* anything else: a traceback's continuation lines, tini's warnings.

An untimed line takes the time of the timed line before it (or ``base_time``, the
sandbox's creation, before the first); an indented line and a traceback's lines (up to
and including its exception line) continue the entry before them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

_ENVD: Final = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (\S+) (DEBUG|INFO|WARNING|ERROR|CRITICAL) (.*)$"
)
_UVICORN: Final = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL):\s+(.*)$")
_LEVELS: Final = {
    "DEBUG": "debug", "INFO": "info", "WARNING": "warn", "ERROR": "error", "CRITICAL": "error",
}  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class EnvdLogEntry:
    """One entry: ``timestamp`` is epoch seconds; ``fields`` name its source."""

    timestamp: float
    level: str
    message: str
    fields: dict[str, str] = field(default_factory=dict)


def parse_envd_log(text: str, *, base_time: float) -> list[EnvdLogEntry]:
    """Entries of ``text`` in file order (see the module docstring)."""
    entries: list[EnvdLogEntry] = []
    last_time = base_time
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line:
            continue
        if m := _ENVD.match(line):
            stamp = datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f").replace(tzinfo=UTC)
            last_time = stamp.timestamp()
            entries.append(
                EnvdLogEntry(
                    timestamp=last_time, level=_LEVELS[m[3]], message=m[4], fields={"logger": m[2]}
                )
            )
        elif m := _UVICORN.match(line):
            entries.append(
                EnvdLogEntry(
                    timestamp=last_time,
                    level=_LEVELS[m[1]],
                    message=m[2],
                    fields={"logger": "uvicorn"},
                )
            )
        elif entries and _continues(line, after=entries[-1].message):
            prev = entries[-1]
            entries[-1] = EnvdLogEntry(
                timestamp=prev.timestamp, level=prev.level, message=f"{prev.message}\n{line}",
                fields=prev.fields,
            )  # fmt: skip
        else:
            entries.append(EnvdLogEntry(timestamp=last_time, level="info", message=line, fields={}))
    return entries


def _continues(line: str, *, after: str) -> bool:
    """Indented, a traceback's header, or the exception line right after its frames."""
    if line[0] in " \t" or line.startswith(("Traceback ", "During handling")):
        return True
    tail = after.rsplit("\n", 1)[-1]
    return "\n" in after and tail[:1] in (" ", "\t")
