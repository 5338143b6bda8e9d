"""Choosing which log lines a ``/logs`` request gets (pure; ADR 0010): a sandbox's, and a
template build's (``/templates/{id}/builds/{buildID}/logs``).

The node (or the build) hands over every line it keeps (oldest first); this applies E2B's
query:

* ``cursor`` (v2) / ``start`` (v1), unix ms: with ``forward`` (the default) the lines at or
  after it, oldest first; with ``backward`` the lines at or before it, newest first (as
  infra's Loki query does). Without a cursor, backward starts from the newest line;
* ``level``: the minimum level (``debug`` < ``info`` < ``warn`` < ``error``);
* ``search``: a case-sensitive substring of the message;
* ``limit``: at most this many, counted after the filters.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final, Protocol, TypeVar

from hutch.shared.errors import InvalidArgumentError

LEVELS: Final = ("debug", "info", "warn", "error")
#: ``search`` longer than this is refused (the spec's maxLength).
MAX_SEARCH: Final = 256


class LogDirection(StrEnum):
    """E2B's ``LogsDirection``."""

    FORWARD = "forward"
    BACKWARD = "backward"


@dataclass(frozen=True, slots=True, kw_only=True)
class LogsQuery:
    """What a ``/logs`` request asks for (see the module docstring)."""

    cursor: datetime | None = None
    limit: int = 1000
    direction: LogDirection = LogDirection.FORWARD
    min_level: str | None = None
    search: str | None = None

    def __post_init__(self) -> None:
        if self.limit < 0:
            raise InvalidArgumentError("limit must not be negative")
        if self.min_level is not None and self.min_level not in LEVELS:
            raise InvalidArgumentError(f"level must be one of {', '.join(LEVELS)}")
        if self.search is not None and len(self.search) > MAX_SEARCH:
            raise InvalidArgumentError(f"search must be at most {MAX_SEARCH} characters")


class LogLine(Protocol):
    """What selecting needs of a line (``SandboxLogLine``, a build's ``LogEntry``)."""

    @property
    def timestamp(self) -> datetime: ...
    @property
    def level(self) -> str: ...
    @property
    def message(self) -> str: ...


_Line = TypeVar("_Line", bound=LogLine)


def _rank(level: str) -> int:
    return LEVELS.index(level) if level in LEVELS else LEVELS.index("info")


def select_log_lines(lines: Iterable[_Line], query: LogsQuery) -> list[_Line]:
    """The lines ``query`` selects, in the order it asks for (``lines`` oldest first)."""
    ordered = list(lines)
    forward = query.direction is LogDirection.FORWARD
    if not forward:
        ordered.reverse()
    floor = _rank(query.min_level) if query.min_level is not None else 0
    out: list[_Line] = []
    for line in ordered:
        if len(out) >= query.limit:
            break
        if query.cursor is not None and (
            line.timestamp < query.cursor if forward else line.timestamp > query.cursor
        ):
            continue
        if _rank(line.level) < floor:
            continue
        if query.search is not None and query.search not in line.message:
            continue
        out.append(line)
    return out
