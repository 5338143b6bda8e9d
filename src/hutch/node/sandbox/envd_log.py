"""Parsing a sandbox's envd log (``<sandbox_dir>/envd.log``) into timestamped entries.

The file is what tini and envd write to their stdout/stderr (the runtime hands them the
file; ADR 0010). These kinds of lines appear in it:

* envd's records (its own and uvicorn's), one flat JSON object per line as E2B's envd
  writes them (``envd/logs.py``): ``{"level": "info", "logger": "process", "timestamp":
  "2026-11-23T17:31:18.250123Z", "message": "started pid 12 ..."}``. They are read the way
  E2B's API reads envd's lines from its log store: ``level`` and ``message`` become the
  entry's, every other key with a string, number or boolean value one of its ``fields``
  (``timestamp`` included; nested values are dropped), and ``timestamp`` its time;
* the text lines of an envd from before the JSON format (a sandbox that outlived an
  upgrade): ``2026-11-23 17:31:18,123 envd INFO started pid 12 ...`` (UTC) and uvicorn's
  ``INFO:     Uvicorn running on ...``, with no time of their own;
* anything else: what Python prints before envd's logging is set up (a traceback), tini's
  warnings.

An untimed line takes the time of the timed line before it (or ``base_time``, the
sandbox's creation, before the first); an indented text line and a traceback's lines (up
to and including its exception line) continue the entry before them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

_ENVD: Final = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (\S+) (DEBUG|INFO|WARNING|ERROR|CRITICAL) (.*)$"
)
_UVICORN: Final = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL):\s+(.*)$")
_LEVELS: Final = {
    "DEBUG": "debug", "INFO": "info", "WARNING": "warn", "ERROR": "error", "CRITICAL": "error",
}  # fmt: skip
#: The levels E2B's API knows; any other is ``info``, as there.
_JSON_LEVELS: Final = frozenset({"debug", "info", "warn", "error"})


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
        if (entry := _json_entry(line, default_time=last_time)) is not None:
            last_time = entry.timestamp
            entries.append(entry)
        elif m := _ENVD.match(line):
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


def _json_entry(line: str, *, default_time: float) -> EnvdLogEntry | None:
    """The entry of one JSON line, or None when ``line`` is not a JSON object."""
    if not line.startswith("{"):
        return None
    try:
        record: Any = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    fields = {k: flat for k, v in record.items() if (flat := _flat(v)) is not None}
    level = fields.pop("level", "info")
    message = fields.pop("message", "")
    return EnvdLogEntry(
        timestamp=_time(fields.get("timestamp"), default=default_time),
        level=level if level in _JSON_LEVELS else "info",
        message=message,
        fields=fields,
    )


def _flat(value: object) -> str | None:
    """A scalar JSON value as E2B's API stores it (a string), or None for the rest."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value)
    return None


def _time(value: str | None, *, default: float) -> float:
    if value is None:
        return default
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        return default
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()


def _continues(line: str, *, after: str) -> bool:
    """Indented, a traceback's header, or the exception line right after its frames."""
    if line[0] in " \t" or line.startswith(("Traceback ", "During handling")):
        return True
    tail = after.rsplit("\n", 1)[-1]
    return "\n" in after and tail[:1] in (" ", "\t")
